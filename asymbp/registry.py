"""One way to choose a component by name: a Registry per config group.

A group's code registers under the name its YAML's `name` key gives; the registry then finds it
(with "did you mean" for a typo), checks a config node's options against the component's
signature and builds it, raising one-line ConfigErrors throughout:

    RULES = Registry("feedback")

    @RULES.register("usf")
    class USF(FeedbackRule): ...

    RULES.build("usf", scale=1.0)             # USF(scale=1.0)
    RULES.build_from(cfg.feedback, skip=("last_layer_bp",))

Plugins register the same way (asymbp.register_rule, register_model, register_dataset, ...), so a
user's component is chosen by `feedback=myrule` like a shipped one.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from asymbp.config import ConfigError

T = TypeVar("T")


def _signature(component) -> inspect.Signature:
    """The arguments a component is built with (a class's __init__, a dataclass's fields)."""
    return inspect.signature(component)


class Registry(Mapping[str, T], Generic[T]):
    """name -> component for one config group, in registration order (the order of tables)."""

    def __init__(self, group: str, key: str | None = None):
        #: the config group (named in option errors) and the key whose value picks a component
        self.group, self.key = group, key or group
        self._entries: dict[str, T] = {}

    # -- registering
    def register(self, name: str, component: T | None = None):
        """Add `component` under `name`; without it, a decorator that does. Registering the same
        object again (a module reload) is fine; a second object under one name is an error."""

        def add(component: T) -> T:
            previous = self._entries.get(name)
            if previous is not None and _origin(previous) != _origin(component):
                raise ValueError(
                    f"{self.group} {name!r} is already registered by {_origin(previous)}"
                )
            self._entries[name] = component
            return component

        return add if component is None else add(component)

    def unregister(self, name: str) -> None:
        """Remove `name` if it is registered (a test's or a notebook's temporary component)."""
        self._entries.pop(name, None)

    # -- the Mapping view (names in registration order)
    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    # -- finding
    def get_or_fail(self, name) -> T:
        """The component called `name`, or a ConfigError naming the closest names."""
        if name in self._entries:
            return self._entries[name]
        close = difflib.get_close_matches(str(name), list(self._entries), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(
            f"{self.key}={name!r} is unknown: {hint}choose one of {', '.join(self._entries)}"
        )

    # -- checking and building
    def accepted(self, name: str) -> list[str]:
        """The option names `name`'s component takes by keyword."""
        parameters = _signature(self.get_or_fail(name)).parameters.values()
        return [
            p.name
            for p in parameters
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"
        ]

    def check(self, name: str, options: Mapping[str, Any], provided=(), positional: int = 0):
        """ConfigError unless `name`'s component takes `options` as keywords, besides the
        `positional` arguments and the keywords the caller `provided` itself (a model's
        in_channels, say)."""
        signature = _signature(self.get_or_fail(name))
        keywords = dict(options) | {key: None for key in provided}
        try:
            signature.bind(*([None] * positional), **keywords)
        except TypeError as error:
            takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
            unknown = sorted(set(options) - set(self.accepted(name)))
            if unknown and not takes_any:
                own = [key for key in self.accepted(name)[positional:] if key not in provided]
                raise ConfigError(
                    f"{self.group}={name} has no option {', '.join(unknown)}: its options are "
                    f"{', '.join(own) or 'none'}"
                ) from None
            raise ConfigError(f"{self.group}={name}: {error}") from None

    def build(self, name: str, *args, **options) -> Any:
        """The component called `name` built from `args` and `options`; an option it does not
        take, or a ValueError/TypeError it raises on a value, is a one-line ConfigError."""
        self.check(name, options, positional=len(args))
        try:
            return self.get_or_fail(name)(*args, **options)
        except (ValueError, TypeError) as error:
            raise ConfigError(f"{self.group}={name}: {error}") from None

    def build_from(self, node: Mapping, *args, skip: tuple[str, ...] = (), **provided) -> Any:
        """build() from a config node: its `name`, and its other keys (less `skip`) as options."""
        return self.build(node["name"], *args, **options_of(node, skip), **provided)


def options_of(node: Mapping, skip: tuple[str, ...] = ()) -> dict:
    """A config node's keys besides `name` (and `skip`), resolved, as a plain dict."""
    return {k: v for k, v in _plain(node).items() if k != "name" and k not in skip}


def _plain(node: Mapping) -> dict:
    try:
        from omegaconf import DictConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return dict(node)
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    return dict(node)


def _origin(component: Callable) -> str:
    module = getattr(component, "__module__", "?")
    return f"{module}.{getattr(component, '__qualname__', component)}"

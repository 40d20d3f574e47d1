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

A component's parameter annotations are its options' declaration: the type (int, float, bool, str,
a Literal of choices, a list or tuple of these, a dataclass for a nested block, unions, None) and,
for numbers, a Range in typing.Annotated. Registry.check refuses a value that does not fit in one
line naming the key (`feedback.lr=True is out of range: a number > 0`), before anything is built:

    lr: Positive = 0.01                           # Annotated[float, Range(gt=0)]
    weight_decay: Annotated[float, Range(ge=0, lt=1)] = 0.01

YAML's true is a Python int and NaN a float: neither is accepted as a number.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import math
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Annotated, Any, Generic, Literal, TypeVar

from asymbp.config import ConfigError, out_of_range

T = TypeVar("T")


def _signature(component) -> inspect.Signature:
    """The arguments a component is built with (a class's __init__, a dataclass's fields)."""
    return inspect.signature(component)


# ------------------------------------------------------------------------- declaring options


@dataclasses.dataclass(frozen=True)
class Range:
    """The interval a number must lie in, as typing.Annotated metadata: gt/ge below, lt/le above."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def contains(self, x) -> bool:
        return (
            (self.gt is None or x > self.gt)
            and (self.ge is None or x >= self.ge)
            and (self.lt is None or x < self.lt)
            and (self.le is None or x <= self.le)
        )

    def describe(self) -> str:
        low = ("(", self.gt) if self.gt is not None else ("[", self.ge)
        high = (")", self.lt) if self.lt is not None else ("]", self.le)
        if low[1] is not None and high[1] is not None:
            return f"in {low[0]}{_num(low[1])}, {_num(high[1])}{high[0]}"
        bounds = [f"{op} {_num(v)}" for op, v in
                  ((">", self.gt), (">=", self.ge), ("<", self.lt), ("<=", self.le))
                  if v is not None]  # fmt: skip
        return " and ".join(bounds)


def _num(value) -> str:
    return "2**63 - 1" if value == 2**63 - 1 else f"{value:g}"


#: The declarations shared by the components (one place for each common range).
PositiveInt = Annotated[int, Range(ge=1)]
Count = Annotated[int, Range(ge=0)]
Positive = Annotated[float, Range(gt=0)]
NonNegative = Annotated[float, Range(ge=0)]
Fraction = Annotated[float, Range(ge=0, le=1)]
#: A fraction strictly between 0 and 1: a test split's share.
OpenFraction = Annotated[float, Range(gt=0, lt=1)]
#: A rate in [0, 1): momentum, a decay per step, dropout.
Rate = Annotated[float, Range(ge=0, lt=1)]
#: Seeds go to torch.manual_seed and torch.Generator.manual_seed (64-bit).
Seed = Annotated[int, Range(ge=0, le=2**63 - 1)]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    """A finite int or float; YAML's true/false (Python bools are ints) and NaN are not."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _members(annotation) -> tuple:
    """A union's members (X | Y, Optional[X]); else the annotation alone."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def fits(value, annotation) -> bool:
    """Whether `value` (a config value: plain Python) is of the declared type and range."""
    return any(_fits_one(value, member) for member in _members(annotation))


def _fits_one(value, annotation) -> bool:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        ranges = [m for m in annotation.__metadata__ if isinstance(m, Range)]
        return fits(value, args[0]) and all(r.contains(value) for r in ranges)
    if annotation is Any or annotation is inspect.Parameter.empty:
        return True
    if annotation is None or annotation is type(None):
        return value is None
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return _is_int(value)
    if annotation is float:
        return _is_number(value)
    if annotation is str:
        return isinstance(value, str)
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        return isinstance(value, annotation) or (
            isinstance(value, Mapping) and _block_error("", value, annotation) is None
        )
    if origin is tuple and args and args[-1] is not Ellipsis:  # fixed length: tuple[X, Y]
        return (
            isinstance(value, list | tuple)
            and len(value) == len(args)
            and all(fits(v, a) for v, a in zip(value, args, strict=True))
        )
    if origin in (list, tuple, Sequence, Iterable):
        item = args[0] if args else Any
        return isinstance(value, list | tuple) and all(fits(v, item) for v in value)
    return True  # a path, a mapping, ...: left to the component


def describe(annotation) -> str:
    """What a value of `annotation` must be, in words: 'null or an integer >= 1'."""
    words = [_describe_one(member) for member in _members(annotation)]
    nulls = [w for w in words if w == "null"]
    return " or ".join(nulls + [w for w in words if w != "null"])


def _describe_one(annotation) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        ranges = [m.describe() for m in annotation.__metadata__ if isinstance(m, Range)]
        return " ".join([describe(args[0]), *ranges])
    if annotation is None or annotation is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        return "a mapping of " + ", ".join(f.name for f in dataclasses.fields(annotation))
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"a list of {len(args)}: " + ", ".join(describe(a) for a in args)
    if origin in (list, tuple, Sequence, Iterable):
        return f"a list of ({describe(args[0])})" if args else "a list"
    simple = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return simple.get(annotation, getattr(annotation, "__name__", str(annotation)))


@functools.cache
def declarations(component) -> dict[str, Any]:
    """The annotation of each parameter of `component` (a class's __init__ or dataclass fields,
    a function, and the functions in its `declared_by` attribute, such as a dataset loader's shared
    decoding keys), resolved; a component whose annotations cannot be resolved declares nothing."""
    hints: dict[str, Any] = {}
    targets = [*getattr(component, "declared_by", ()), component]
    if isinstance(component, type):
        targets = (
            [component, component.__init__]
            if dataclasses.is_dataclass(component)
            else [component.__init__]
        )
    for target in targets:
        try:
            hints |= typing.get_type_hints(target, include_extras=True)
        except (NameError, TypeError, AttributeError):  # a plugin's unresolvable annotation
            continue
    names = _signature(component).parameters
    return {name: hint for name, hint in hints.items() if name in names}


def _block_error(prefix: str, values: Mapping, block: type) -> str | None:
    """The first error in a nested block (a dataclass declared by its fields), or None."""
    hints = typing.get_type_hints(block, include_extras=True)
    names = [f.name for f in dataclasses.fields(block)]
    for key, value in values.items():
        if key not in names:
            return (
                f"{prefix}{key} is not a key of {prefix.rstrip('.') or block.__name__}: "
                f"its keys are {', '.join(names)}"
            )
        if not fits(value, hints[key]):
            return str(out_of_range(f"{prefix}{key}", value, describe(hints[key])))
    return None


def check_values(prefix: str, values: Mapping[str, Any], declared: Mapping[str, Any]) -> None:
    """ConfigError for the first value that does not fit its declaration, named `prefix.key`
    (`key` for the empty prefix)."""
    for name, value in values.items():
        if name not in declared:
            continue
        key = f"{prefix}.{name}" if prefix else name
        annotation = declared[name]
        blocks = [
            m for m in _members(annotation)
            if dataclasses.is_dataclass(m) and isinstance(m, type)
        ]  # fmt: skip
        if blocks and isinstance(value, Mapping):
            error = _block_error(f"{key}.", value, blocks[0])
            if error:
                raise ConfigError(error)
            continue
        if not fits(value, annotation):
            raise out_of_range(key, value, describe(annotation))


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
        component = self.get_or_fail(name)
        signature = _signature(component)
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
        check_values(self.group, options, declarations(component))

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

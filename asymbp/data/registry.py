"""The registry mapping a dataset name (the `dataset` config group's option) to its loader."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping

from asymbp.data.base import Expect, InMemoryDataset
from asymbp.data.decode import DECODING_KEYS, DECODING_PARAMETERS, Decoding
from asymbp.registry import Registry

Loader = Callable[..., InMemoryDataset]

#: name -> loader; each loader takes its dataset config's keys (besides `name`) as keywords. A
#: loader with a parameter `decoding` is registered as `taking_config_keys(loader)`, which takes
#: the shared keys (DECODING_KEYS) in its place, so that checking a config's options against a
#: signature (Registry.check) sees the keys the YAML has.
DATASETS: Registry[Loader] = Registry("dataset")


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    """Decorator: make a loader the choice `dataset=<name>`; the loader is returned unchanged."""

    def add(loader: Loader) -> Loader:
        DATASETS.register(name, taking_config_keys(loader))
        return loader

    return add


def taking_config_keys(loader: Loader) -> Loader:
    """`loader` as called with its config's flat keys: unchanged unless it has a parameter
    `decoding`; then a function taking its other parameters and, keyword-only, DECODING_KEYS,
    which makes them one Decoding and calls loader(**others, decoding=...)."""
    signature = inspect.signature(loader)
    if "decoding" not in signature.parameters:
        return loader
    own = [p for p in signature.parameters.values() if p.name != "decoding"]
    clash = sorted({p.name for p in own} & set(DECODING_KEYS))
    if clash:
        raise TypeError(f"{loader.__qualname__} takes decoding and also {', '.join(clash)}")
    shared = [p.replace(kind=p.KEYWORD_ONLY) for p in DECODING_PARAMETERS]

    @functools.wraps(loader)
    def from_config(**options) -> InMemoryDataset:
        keys = {key: options.pop(key) for key in DECODING_KEYS}
        return loader(**options, decoding=Decoding.from_config(**keys))

    from_config.declared_by = (Decoding.from_config,)  # the shared keys' annotations

    # own parameters first, in the kinds' order (keyword-only after positional, ** last)
    from_config.__signature__ = signature.replace(
        parameters=sorted([*own, *shared], key=lambda p: p.kind)
    )
    return from_config


def load_dataset(name: str, **options) -> InMemoryDataset:
    """Load the dataset registered as `name`, passing `options` to its loader; an `expect`
    mapping (a config's expect block) becomes an Expect, None an Expect that checks nothing."""
    loader = DATASETS.get_or_fail(name)
    if "expect" in options and options["expect"] is None:
        options["expect"] = Expect()  # dataset.expect=null: nothing checked
    if isinstance(options.get("expect"), Mapping):
        try:
            options["expect"] = Expect(**options["expect"])
        except TypeError:
            raise TypeError(
                f"dataset {name!r}: expect takes the keys classes, train and test, "
                f"got {sorted(options['expect'])}"
            ) from None
    DATASETS.check(name, options)
    return loader(**options)

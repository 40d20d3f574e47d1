"""The registry mapping a dataset name (the `dataset` config group's option) to its loader."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping

from asymbp.data.base import Expect, InMemoryDataset

Loader = Callable[..., InMemoryDataset]

#: name -> loader; each loader takes its dataset config's keys (besides `name`) as keywords.
DATASETS: dict[str, Loader] = {}


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    """Decorator adding a loader to DATASETS under `name`."""

    def decorator(loader: Loader) -> Loader:
        previous = DATASETS.get(name)
        # Re-registering the same function (a module reload) is fine; a second loader is a clash.
        if previous is not None and (previous.__module__, previous.__qualname__) != (
            loader.__module__,
            loader.__qualname__,
        ):
            raise ValueError(
                f"dataset {name!r} is already registered by "
                f"{previous.__module__}.{previous.__qualname__}"
            )
        DATASETS[name] = loader
        return loader

    return decorator


def load_dataset(name: str, **options) -> InMemoryDataset:
    """Load the dataset registered as `name`, passing `options` to its loader; an `expect`
    mapping (a config's expect block) becomes an Expect, None an Expect that checks nothing."""
    try:
        loader = DATASETS[name]
    except KeyError:
        raise ValueError(
            f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}"
        ) from None
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
    signature = inspect.signature(loader)
    try:
        signature.bind(**options)
    except TypeError as error:
        accepted = ", ".join(
            p.name for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD
        )
        raise TypeError(f"dataset {name!r}: {error}; its options are: {accepted}") from None
    return loader(**options)

"""The registry mapping a dataset name (the `dataset` config group's option) to its loader."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from asymbp.data.base import Expect, InMemoryDataset
from asymbp.registry import Registry

Loader = Callable[..., InMemoryDataset]

#: name -> loader; each loader takes its dataset config's keys (besides `name`) as keywords.
DATASETS: Registry[Loader] = Registry("dataset")


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    """Decorator: make a loader the choice `dataset=<name>`."""
    return DATASETS.register(name)


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

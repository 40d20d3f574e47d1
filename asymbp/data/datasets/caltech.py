"""Caltech-101 (Fei-Fei et al. 2004) and Caltech-256 (Griffin et al. 2007): one folder of .jpg
files per category, in torchvision's layout (root/caltech101/101_ObjectCategories/,
root/caltech256/256_ObjectCategories/), which also downloads them (dataset.download=true). No
official split: a seeded per-class rule; the images are decoded once, resized and cached."""

from __future__ import annotations

import os
from pathlib import Path

from torchvision.datasets import Caltech101, Caltech256

from asymbp.data.base import InMemoryDataset
from asymbp.data.decode import Decoding
from asymbp.data.layout import Layout, fetch
from asymbp.data.pipeline import load_by_rule, torchvision_index
from asymbp.data.registry import register_dataset
from asymbp.data.splits import SplitRule
from asymbp.registry import OpenFraction, PositiveInt, Seed

CALTECH101 = Layout(
    "caltech101",
    "https://data.caltech.edu/records/mzrjq-6wc02",
    expected=("caltech101/101_ObjectCategories/BACKGROUND_Google",),
    download=True,
)
CALTECH256 = Layout(
    "caltech256",
    "https://data.caltech.edu/records/nyy15-4j048",
    expected=("caltech256/256_ObjectCategories",),
    download=True,
)
CALTECH256_CLUTTER = "257.clutter"


def category_files(folder: Path, categories: list[str]):
    """(the .jpg files of each category folder, their labels, the categories).

    The files are listed rather than named as torchvision's __getitem__ names them (numbers 1
    to the count of entries in the folder), which would invent files when a folder holds a
    stray entry (a .DS_Store) or a gap in its numbering; on a clean copy both give the same.
    """
    paths, labels = [], []
    for label, category in enumerate(categories):
        found = sorted((folder / category).glob("*.jpg"))
        paths += found
        labels += [label] * len(found)
    return paths, labels, categories


def without_class(paths: list[Path], labels: list[int], classes: list[str], name: str):
    """The files, labels (renumbered) and classes without the class `name` (if present)."""
    if name not in classes:
        return paths, labels, classes
    dropped = classes.index(name)
    kept = [i for i, label in enumerate(labels) if label != dropped]
    renumber = [label - (label > dropped) for label in labels]
    classes = classes[:dropped] + classes[dropped + 1 :]
    return [paths[i] for i in kept], [renumber[i] for i in kept], classes


def _load_caltech(
    layout: Layout,
    cls: type,
    folder: str,
    root,
    download: bool,
    rule: SplitRule,
    decoding: Decoding,
    drop: str | None = None,
) -> InMemoryDataset:
    """torchvision lists the categories, the split is a seeded per-class rule; `drop` leaves one
    class out (Caltech-256's clutter)."""
    root = fetch(layout, root, download, lambda r: cls(r, download=True))
    data = torchvision_index(layout, root, cls)
    files = category_files(Path(data.root) / folder, list(data.categories))
    if drop is not None:
        files = without_class(*files, drop)
    return load_by_rule(layout, root, *files, decoding, rule=rule)


@register_dataset("caltech101")
def load_caltech101(
    root: str | os.PathLike,
    train_per_class: PositiveInt | None,
    test_per_class: PositiveInt | None,
    test_fraction: OpenFraction | None,
    split_seed: Seed,
    download: bool,
    decoding: Decoding,
) -> InMemoryDataset:
    """Caltech-101: 101 object categories (BACKGROUND_Google left out, as torchvision does)."""
    return _load_caltech(
        CALTECH101, Caltech101, "101_ObjectCategories", root, download,
        SplitRule(train_per_class, test_per_class, test_fraction, split_seed), decoding,
    )  # fmt: skip


@register_dataset("caltech256")
def load_caltech256(
    root: str | os.PathLike,
    train_per_class: PositiveInt | None,
    test_per_class: PositiveInt | None,
    test_fraction: OpenFraction | None,
    split_seed: Seed,
    include_clutter: bool,
    download: bool,
    decoding: Decoding,
) -> InMemoryDataset:
    """Caltech-256: 256 object categories, plus 257.clutter when include_clutter."""
    return _load_caltech(
        CALTECH256, Caltech256, "256_ObjectCategories", root, download,
        SplitRule(train_per_class, test_per_class, test_fraction, split_seed), decoding,
        drop=None if include_clutter else CALTECH256_CLUTTER,
    )  # fmt: skip

"""PubFig83 (Pinto et al. 2011): 13838 face images of 83 public figures, one folder per person, as
pubfig83.v1.tgz (http://vision.seas.harvard.edu/pubfig83/) unpacks: pubfig83/<person>/*.jpg.
83-way identification; no official split, a seeded per-class rule."""

from __future__ import annotations

import os
from pathlib import Path

from asymbp.data.base import InMemoryDataset
from asymbp.data.decode import Decoding
from asymbp.data.formats.images import images_below, subfolders
from asymbp.data.layout import Layout
from asymbp.data.pipeline import load_by_rule
from asymbp.data.registry import register_dataset
from asymbp.data.splits import SplitRule
from asymbp.registry import OpenFraction, PositiveInt, Seed

PUBFIG83 = Layout(
    "pubfig83",
    "http://vision.seas.harvard.edu/pubfig83/ (pubfig83.v1.tgz, Pinto et al. 2011)",
    contents="one folder of face images per person (83 folders); pubfig83.v1.tgz unpacks to "
    "pubfig83/<person>/, so extract it in the folder above dataset.root",
)


def person_folders(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """(image paths, labels, names): one class per folder of root, its images at any depth."""
    people = subfolders(root)
    if not people:
        raise PUBFIG83.missing(root, f"no person folders in {root}")
    paths, labels = [], []
    for label, folder in enumerate(people):
        found = images_below(folder)
        paths += found
        labels += [label] * len(found)
    return paths, labels, [folder.name for folder in people]


@register_dataset("pubfig83")
def load_pubfig83(
    root: str | os.PathLike,
    train_per_class: PositiveInt | None,
    test_per_class: PositiveInt | None,
    test_fraction: OpenFraction | None,
    split_seed: Seed,
    min_images: PositiveInt,
    decoding: Decoding,
) -> InMemoryDataset:
    """PubFig83 (Pinto et al. 2011): 83-way identification, one folder of images per person,
    no official split: a seeded per-class rule."""
    root = PUBFIG83.check(root)
    paths, labels, classes = person_folders(root)
    return load_by_rule(
        PUBFIG83, root, paths, labels, classes, decoding,
        rule=SplitRule(train_per_class, test_per_class, test_fraction, split_seed),
        min_images=min_images,
    )  # fmt: skip

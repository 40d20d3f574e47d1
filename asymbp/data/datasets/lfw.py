"""Labeled Faces in the Wild (Huang et al. 2007) as N-way identification: one folder of images
per person, <Name>/<Name>_0001.jpg..., and the list of people with their image counts, read from
UMass's files or from the Kaggle mirror (deepfunneled only). The protocol of LFW is pair
verification; there is no official identification split, so the split is a seeded rule."""

from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path
from typing import Literal

from asymbp.data.base import InMemoryDataset
from asymbp.data.decode import Decoding
from asymbp.data.layout import Layout
from asymbp.data.pipeline import load_by_rule, require_listed
from asymbp.data.registry import register_dataset
from asymbp.data.splits import SplitRule
from asymbp.registry import OpenFraction, PositiveInt, Seed

LFW = Layout(
    "lfw",
    "http://vis-www.cs.umass.edu/lfw/ (or, for deepfunneled, the mirror "
    "https://www.kaggle.com/datasets/jessicali9530/lfw-dataset)",
    contents="lfw-py/<images folder>/<Name>/<Name>_0001.jpg... with lfw-py/lfw-names.txt (UMass "
    "files, torchvision's layout) or the Kaggle mirror's lfw-deepfunneled/lfw-deepfunneled/<Name>/ "
    "with lfw_allnames.csv",
)
#: LFW's copies: (image folder, list of people with their image counts) under root, per image
#: set. UMass ships lfw.tgz, lfw-funneled.tgz, lfw-deepfunneled.tgz and lfw-names.txt
#: ("Name<TAB>count" lines), laid out under lfw-py/ as torchvision's LFWPeople does; the Kaggle
#: mirror (jessicali9530/lfw-dataset) ships deepfunneled only, as
#: lfw-deepfunneled/lfw-deepfunneled/<Name>/ beside lfw_allnames.csv (columns name, images).
LFW_COPIES = {
    "original": (("lfw-py/lfw", "lfw-py/lfw-names.txt"),),
    "funneled": (("lfw-py/lfw_funneled", "lfw-py/lfw-names.txt"),),
    "deepfunneled": (
        ("lfw-py/lfw-deepfunneled", "lfw-py/lfw-names.txt"),
        ("lfw-deepfunneled/lfw-deepfunneled", "lfw_allnames.csv"),
    ),
}
#: lfw's image_set choices.
LFW_IMAGE_SETS = tuple(LFW_COPIES)


def _lfw_people(layout: Layout, path: Path) -> list[tuple[str, int]]:
    """(name, image count) per person of lfw-names.txt or lfw_allnames.csv."""
    try:
        with open(path, newline="") as file:
            if path.suffix == ".csv":
                rows = [(row["name"], row["images"]) for row in csv.DictReader(file)]
            else:
                rows = [tuple(line.split()) for line in file.read().splitlines() if line.strip()]
        return [(name.strip(), int(count)) for name, count in rows]
    except (OSError, UnicodeDecodeError, KeyError, ValueError, TypeError) as error:
        raise layout.corrupt(path, f"not a list of people and image counts ({error})") from None


def lfw_files(root: Path, image_set: str) -> tuple[Path, list[Path], list[int], list[str]]:
    """(the copy's image folder, image paths, labels, names): every image the list of people
    names, <Name>/<Name>_<k:04d>.jpg for k = 1..count, which must exist."""
    for folder, names in LFW_COPIES[image_set]:
        if (root / folder).is_dir() and (root / names).is_file():
            break
    else:
        places = " or ".join(f"{folder}/ with {names}" for folder, names in LFW_COPIES[image_set])
        mirror = "" if image_set == "deepfunneled" else " (the Kaggle mirror has deepfunneled only)"
        raise LFW.missing(root, f"no {places} in {root}{mirror}")
    people = _lfw_people(LFW, root / names)
    paths, labels = [], []
    for label, (name, count) in enumerate(people):
        paths += [root / folder / name / f"{name}_{k:04d}.jpg" for k in range(1, count + 1)]
        labels += [label] * count
    require_listed(LFW, root, paths, names)
    return root / folder, paths, labels, [name for name, _ in people]


@register_dataset("lfw")
def load_lfw(
    root: str | os.PathLike,
    image_set: Literal[LFW_IMAGE_SETS],
    min_images: PositiveInt,
    train_per_class: PositiveInt | None,
    test_per_class: PositiveInt | None,
    test_fraction: OpenFraction | None,
    split_seed: Seed,
    decoding: Decoding,
) -> InMemoryDataset:
    """Labeled Faces in the Wild (Huang et al. 2007) as N-way identification of the people with
    at least min_images images, from UMass's files or the Kaggle mirror; no official
    identification split, a seeded per-class rule."""
    root = LFW.check(root)
    folder, paths, labels, classes = lfw_files(root, image_set)
    return load_by_rule(
        dataclasses.replace(LFW, expected=(str(folder.relative_to(root)),)), root,
        paths, labels, classes, decoding,
        rule=SplitRule(train_per_class, test_per_class, test_fraction, split_seed),
        min_images=min_images,
    )  # fmt: skip

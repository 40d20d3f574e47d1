"""iCubWorld28 (robotology.github.io/iCubWorld): 28 objects of 7 categories shown to the iCub robot,
acquired on 4 days for training and 4 for test, as its archive unpacks (and pralab/secml's
CDataLoaderICubWorld28 reads it): {train,test}/day<d>/<category>/<category><k>/*.ppm."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from asymbp.data.base import InMemoryDataset
from asymbp.data.decode import Decoding
from asymbp.data.formats.images import images_below, subfolders
from asymbp.data.layout import Layout
from asymbp.data.pipeline import ImageFiles, load_image_files
from asymbp.data.registry import register_dataset

#: iCubWorld28 (pralab/secml's CDataLoaderICubWorld28; robotology.github.io/iCubWorld): 7
#: categories of 4 objects each, 4 acquisition days for training and 4 for test.
ICUBWORLD = Layout(
    "icubworld",
    "https://robotology.github.io/iCubWorld/ (iCubWorld28)",
    contents="iCubWorld28's train/ and test/ trees: day<d>/<category>/<category><k>/*.ppm",
)
ICUBWORLD_LABELS = ("category", "object")


def icubworld_tree(
    root: Path, split: str, days: list[int], labels: str
) -> tuple[list[Path], list[str]]:
    """(image paths, their category or object names) of split/day<d>/<category>/<object>/."""
    paths, names = [], []
    for day in days:
        folder = root / split / f"day{day}"
        if not folder.is_dir():
            raise ICUBWORLD.missing(
                root, f"no {split}/day{day} in {root} (if the archive unpacked into a folder of "
                "its own, set dataset.root to the folder holding train/ and test/)",
            )  # fmt: skip
        for category in subfolders(folder):
            objects = subfolders(category)
            if not objects:
                raise ICUBWORLD.missing(
                    root, f"no object folders in {category} (expected {category.name}1, ...)"
                )
            for obj in objects:
                found = images_below(obj)
                paths += found
                names += [category.name if labels == "category" else obj.name] * len(found)
    return paths, names


@register_dataset("icubworld")
def load_icubworld(
    root: str | os.PathLike,
    labels: Literal[ICUBWORLD_LABELS],
    train_days: list[Literal[1, 2, 3, 4]],
    test_days: list[Literal[1, 2, 3, 4]],
    decoding: Decoding,
) -> InMemoryDataset:
    """iCubWorld28's official split: train/day<d>/ for training, test/day<d>/ for test, labelled
    by category (7) or by object (28)."""
    for key, days in (("train_days", train_days), ("test_days", test_days)):
        if not days:
            raise ValueError(f"icubworld: {key} must name some of the days 1, 2, 3, 4")
    root = ICUBWORLD.check(root)
    train_paths, train_names = icubworld_tree(root, "train", list(train_days), labels)
    test_paths, test_names = icubworld_tree(root, "test", list(test_days), labels)
    classes = sorted(set(train_names))
    unknown = sorted(set(test_names) - set(classes))
    if unknown:
        problem = f"{root / 'test'} has {labels} folders not in train: {unknown}"
        raise ICUBWORLD.missing(root, problem)
    number = {name: label for label, name in enumerate(classes)}
    files = ImageFiles(
        classes, train_paths, [number[n] for n in train_names],
        test_paths, [number[n] for n in test_names],
    )  # fmt: skip
    days = "".join(map(str, train_days)) + "-" + "".join(map(str, test_days))
    return load_image_files(ICUBWORLD, root, files, decoding, split=f"{labels}-days{days}")

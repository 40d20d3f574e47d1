"""Datasets distributed as class-per-folder image trees: PubFig83, SUFR-W (one folder per person),
iCubWorld (train/ and test/ trees) and MIT Indoor Scene-67 (Images/<class>/ with the official
TrainImages.txt and TestImages.txt)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from asymbp.data.base import InMemoryDataset
from asymbp.data.images import IMAGE_SUFFIXES
from asymbp.data.layout import Layout
from asymbp.data.pipeline import ImageFiles, decoding, load_by_rule, load_image_files
from asymbp.data.registry import Loader, register_dataset
from asymbp.data.splits import SplitRule

PUBFIG83 = Layout(
    "pubfig83",
    "http://www.eecs.harvard.edu/~zak/pubfig83/ (Pinto et al. 2011)",
    contents="one folder of face images per person (83 folders)",
)
SUFRW = Layout(
    "sufrw",
    "http://cbmm.mit.edu/resources/data-sets (SUFR, Leibo, Liao & Poggio 2014)",
    contents="one folder of face images per person (SUFR-W's 400 people)",
)
ICUBWORLD = Layout(
    "icubworld",
    "https://robotology.github.io/iCubWorld/",
    contents="a training and a test tree of one folder of images per category",
)
SCENE67 = Layout(
    "scene67",
    "https://web.mit.edu/torralba/www/indoor.html",
    expected=("Images", "TrainImages.txt", "TestImages.txt"),
)


def _hidden(path: Path, folder: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(folder).parts)


def class_tree(layout: Layout, folder: Path) -> tuple[list[Path], list[int], list[str]]:
    """(image paths, labels, class names): one class per sub-folder of `folder` (sorted by
    name), its images found at any depth below it (sorted by path); hidden entries are skipped."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not _hidden(p, folder))
    if not classes:
        raise layout.missing(folder, f"no class folders in {folder}")
    paths, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(
            path
            for path in (folder / name).rglob("*")
            if path.suffix.lower() in IMAGE_SUFFIXES
            and not _hidden(path, folder)
            and path.is_file()
        )
        paths += found
        labels += [label] * len(found)
    return paths, labels, classes


def _identity_folders(layout: Layout, **defaults) -> Loader:
    """The loader of a face set stored as one folder per person: N-way identification of the
    people with at least min_images images, split by a seeded per-class rule. defaults: of
    train_per_class, test_per_class, test_fraction, min_images and num_classes."""
    rule = {"train_per_class": None, "test_per_class": None, "test_fraction": None, **defaults}

    def load(
        root: str | os.PathLike,
        image_size: int = 64,
        channels: int = 3,
        fit: str = "stretch",
        train_per_class: int | None = rule["train_per_class"],
        test_per_class: int | None = rule["test_per_class"],
        test_fraction: float | None = rule["test_fraction"],
        split_seed: int = 0,
        min_images: int = defaults.get("min_images", 1),
        num_classes: int | None = defaults.get("num_classes"),
        cache: bool = True,
        cache_dir: str | os.PathLike | None = None,
    ) -> InMemoryDataset:
        root = layout.check(root)
        paths, labels, classes = class_tree(layout, root)
        return load_by_rule(
            layout, root, paths, labels, classes,
            rule=SplitRule(train_per_class, test_per_class, test_fraction, split_seed),
            min_images=min_images,
            **decoding(image_size, channels, fit, num_classes, cache, cache_dir),
        )  # fmt: skip

    load.__name__ = load.__qualname__ = f"load_{layout.dataset}"
    return load


load_pubfig83 = register_dataset("pubfig83")(
    _identity_folders(PUBFIG83, train_per_class=90, test_per_class=10, num_classes=83)
)
load_sufrw = register_dataset("sufrw")(_identity_folders(SUFRW, test_fraction=0.2, min_images=2))


@register_dataset("icubworld")
def load_icubworld(
    root: str | os.PathLike,
    train_dir: str = "train",
    test_dir: str = "test",
    image_size: int = 64,
    channels: int = 3,
    fit: str = "stretch",
    num_classes: int | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> InMemoryDataset:
    """iCubWorld's official split: the categories are the folders of train_dir; test_dir holds
    folders of the same names. Images may sit at any depth below a category (days, objects)."""
    layout = dataclasses.replace(ICUBWORLD, expected=(train_dir, test_dir))
    root = layout.check(root)
    train_paths, train_labels, classes = class_tree(layout, root / train_dir)
    test_paths, test_labels, test_classes = class_tree(layout, root / test_dir)
    unknown = sorted(set(test_classes) - set(classes))
    if unknown:
        raise layout.missing(
            root, f"{root / test_dir} has categories not in {root / train_dir}: {unknown}"
        )
    number = {name: label for label, name in enumerate(classes)}
    test_labels = [number[test_classes[label]] for label in test_labels]
    files = ImageFiles(classes, train_paths, train_labels, test_paths, test_labels)
    return load_image_files(
        layout, root, files, split="official",
        **decoding(image_size, channels, fit, num_classes, cache, cache_dir),
    )  # fmt: skip


def _read_image_list(layout: Layout, path: Path) -> list[str]:
    """The 'class/file.jpg' lines of a Scene-67 split file."""
    try:
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise layout.corrupt(path, f"cannot read it ({error})") from None
    bad = [line for line in lines if "/" not in line]
    if bad or not lines:
        raise layout.corrupt(
            path, f"expected lines 'class/file.jpg', got {bad[0] if bad else 'an empty file'!r}"
        )
    return lines


@register_dataset("scene67")
def load_scene67(
    root: str | os.PathLike,
    image_size: int = 64,
    channels: int = 3,
    fit: str = "stretch",
    num_classes: int | None = 67,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> InMemoryDataset:
    """MIT Indoor Scene-67 (Quattoni & Torralba 2009) with its official split: the images listed
    in TrainImages.txt and TestImages.txt (80 and 20 per class), under Images/."""
    root = SCENE67.check(root)
    train = _read_image_list(SCENE67, root / "TrainImages.txt")
    test = _read_image_list(SCENE67, root / "TestImages.txt")
    classes = sorted({line.split("/")[0] for line in train + test})
    number = {name: label for label, name in enumerate(classes)}

    def listed(lines: list[str]) -> tuple[list[Path], list[int]]:
        paths = [root / "Images" / line for line in lines]
        return paths, [number[line.split("/")[0]] for line in lines]

    files = ImageFiles(classes, *listed(train), *listed(test))
    return load_image_files(
        SCENE67, root, files, split="official",
        **decoding(image_size, channels, fit, num_classes, cache, cache_dir),
    )  # fmt: skip

"""Image-file datasets that torchvision knows: Caltech-101, Caltech-256, Oxford Flowers-102, LFW.

torchvision's classes give the folder layout, the list of files, the labels and the download
(dataset.download=true); the images are decoded by asymbp.data.images, resized once, unreadable
files skipped and counted, and the tensors cached. `root` is the folder given to torchvision,
which adds its own sub-folder (caltech101/, caltech256/, flowers-102/, lfw-py/).
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

from torchvision.datasets import Caltech101, Caltech256, Flowers102

from asymbp.data.base import UNCHECKED, Expect, InMemoryDataset
from asymbp.data.layout import Layout, fetch
from asymbp.data.matlab import read_mat
from asymbp.data.pipeline import ImageFiles, decoding, load_by_rule, load_image_files
from asymbp.data.registry import register_dataset
from asymbp.data.splits import SplitRule

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
FLOWERS102 = Layout(
    "flowers102",
    "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/",
    expected=("flowers-102/jpg", "flowers-102/imagelabels.mat", "flowers-102/setid.mat"),
    download=True,
)
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
CALTECH256_CLUTTER = "257.clutter"
SPLITS = ("train", "val", "test")


def _trusting(cls: type, layout: Layout, root: Path) -> type:
    """`cls` with torchvision's md5 check replaced by the presence of the layout's files.

    torchvision compares md5 sums of the official files (for LFW even of the .tgz archive, which
    is not needed once extracted), so it rejects every other copy: mirrors, re-packed archives,
    the tiny copies of the tests. We check presence (Layout.check, with our message); a corrupt
    file shows up when it is decoded, and is named then.
    """
    return type(cls.__name__, (cls,), {"_check_integrity": lambda self: layout.present(root)})


def _index(layout: Layout, root: Path, make: Callable[[Path], object]):
    """make(root): the torchvision dataset that lists the files and labels."""
    try:
        return make(root)
    except (RuntimeError, OSError, ValueError, KeyError, IndexError) as error:
        problem = f"torchvision cannot read it ({type(error).__name__}: {error})"
        raise layout.corrupt(root, problem) from None


def _category_files(folder: Path, categories: list[str]):
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


def _without_class(paths: list[Path], labels: list[int], classes: list[str], name: str):
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
    decode: dict,
    drop: str | None = None,
) -> InMemoryDataset:
    """Caltech-101/256: torchvision lists the categories, the split is a seeded per-class rule;
    `drop` leaves one class out (Caltech-256's clutter)."""
    root = fetch(layout, root, download, lambda r: cls(r, download=True))
    data = _index(layout, root, cls)
    files = _category_files(Path(data.root) / folder, list(data.categories))
    if drop is not None:
        files = _without_class(*files, drop)
    return load_by_rule(layout, root, *files, rule=rule, **decode)


@register_dataset("caltech101")
def load_caltech101(
    root: str | os.PathLike,
    image_size: int = 64,
    channels: int = 3,
    fit: str = "stretch",
    train_per_class: int | None = 30,
    test_per_class: int | None = 50,
    test_fraction: float | None = None,
    split_seed: int = 0,
    expect: Expect = UNCHECKED,
    download: bool = False,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> InMemoryDataset:
    """Caltech-101 (Fei-Fei et al. 2004): 101 object categories (BACKGROUND_Google left out, as
    torchvision does); no official split, a seeded per-class rule."""
    return _load_caltech(
        CALTECH101, Caltech101, "101_ObjectCategories", root, download,
        SplitRule(train_per_class, test_per_class, test_fraction, split_seed),
        decoding(image_size, channels, fit, expect, cache, cache_dir),
    )  # fmt: skip


@register_dataset("caltech256")
def load_caltech256(
    root: str | os.PathLike,
    image_size: int = 64,
    channels: int = 3,
    fit: str = "stretch",
    train_per_class: int | None = 30,
    test_per_class: int | None = 25,
    test_fraction: float | None = None,
    split_seed: int = 0,
    include_clutter: bool = False,
    expect: Expect = UNCHECKED,
    download: bool = False,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> InMemoryDataset:
    """Caltech-256 (Griffin et al. 2007): 256 object categories, plus 257.clutter when
    include_clutter; no official split, a seeded per-class rule."""
    return _load_caltech(
        CALTECH256, Caltech256, "256_ObjectCategories", root, download,
        SplitRule(train_per_class, test_per_class, test_fraction, split_seed),
        decoding(image_size, channels, fit, expect, cache, cache_dir),
        drop=None if include_clutter else CALTECH256_CLUTTER,
    )  # fmt: skip


@register_dataset("flowers102")
def load_flowers102(
    root: str | os.PathLike,
    image_size: int = 64,
    channels: int = 3,
    fit: str = "stretch",
    train_on_val: bool = True,
    expect: Expect = UNCHECKED,
    download: bool = False,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> InMemoryDataset:
    """Oxford Flowers-102 (Nilsback & Zisserman 2008), official split of setid.mat: train (10
    per class) plus, when train_on_val, val (10 per class) for training; test (6149) for test."""
    root = fetch(FLOWERS102, root, download, lambda r: Flowers102(r, download=True))
    # Read here first: torchvision's loadmat errors would not say which file is bad.
    read_mat(FLOWERS102, root / "flowers-102/imagelabels.mat", ("labels",))
    read_mat(FLOWERS102, root / "flowers-102/setid.mat", ("trnid", "valid", "tstid"))
    cls = _trusting(Flowers102, FLOWERS102, root)
    splits = {s: _index(FLOWERS102, root, lambda r, s=s: cls(r, split=s)) for s in SPLITS}
    train = [splits["train"], splits["val"]] if train_on_val else [splits["train"]]
    label_set = sorted({label for split in splits.values() for label in split._labels})
    number = {label: i for i, label in enumerate(label_set)}

    def listed(parts: list[Flowers102]) -> tuple[list[Path], list[int]]:
        paths = [Path(p) for part in parts for p in part._image_files]
        return paths, [number[label] for part in parts for label in part._labels]

    classes = [str(label + 1) for label in label_set]  # the class numbers of imagelabels.mat
    files = ImageFiles(classes, *listed(train), *listed([splits["test"]]))
    return load_image_files(
        FLOWERS102, root, files, split="official+val" if train_on_val else "official",
        **decoding(image_size, channels, fit, expect, cache, cache_dir),
    )  # fmt: skip


def _lfw_people(layout: Layout, path: Path) -> list[tuple[str, int]]:
    """(name, image count) per person of lfw-names.txt or lfw_allnames.csv."""
    try:
        with open(path, newline="") as file:
            if path.suffix == ".csv":
                rows = [(row["name"], row["images"]) for row in csv.DictReader(file)]
            else:
                rows = [tuple(line.split("\t")) for line in file.read().splitlines() if line]
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
    absent = [path for path in paths if not path.is_file()]
    if absent:
        raise LFW.missing(
            root, f"{len(absent)} of the {len(paths)} images {names} lists are missing, first "
            f"{absent[0]}",
        )  # fmt: skip
    return root / folder, paths, labels, [name for name, _ in people]


@register_dataset("lfw")
def load_lfw(
    root: str | os.PathLike,
    image_set: str = "funneled",
    image_size: int = 64,
    channels: int = 3,
    fit: str = "stretch",
    min_images: int = 20,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    test_fraction: float | None = 0.25,
    split_seed: int = 0,
    expect: Expect = UNCHECKED,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> InMemoryDataset:
    """Labeled Faces in the Wild (Huang et al. 2007) as N-way identification of the people with
    at least min_images images, from UMass's files or the Kaggle mirror; no official
    identification split, a seeded per-class rule."""
    if image_set not in LFW_COPIES:
        raise ValueError(f"lfw: image_set must be one of {sorted(LFW_COPIES)}, got {image_set!r}")
    root = LFW.check(root)
    folder, paths, labels, classes = lfw_files(root, image_set)
    return load_by_rule(
        dataclasses.replace(LFW, expected=(str(folder.relative_to(root)),)), root,
        paths, labels, classes,
        rule=SplitRule(train_per_class, test_per_class, test_fraction, split_seed),
        min_images=min_images,
        **decoding(image_size, channels, fit, expect, cache, cache_dir),
    )  # fmt: skip

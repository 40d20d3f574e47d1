"""Image datasets read from their own folder trees: PubFig83 (one folder per person), SUFR-W
(a flat folder and an identity list), iCubWorld28 (train/ and test/ trees by day, category and
object) and MIT Indoor Scene-67 (Images/<class>/ with the official TrainImages.txt and
TestImages.txt)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from asymbp.data.base import UNCHECKED, Expect, InMemoryDataset
from asymbp.data.images import IMAGE_SUFFIXES
from asymbp.data.layout import Layout
from asymbp.data.matlab import read_mat
from asymbp.data.pipeline import ImageFiles, decoding, load_by_rule, load_image_files
from asymbp.data.registry import register_dataset
from asymbp.data.splits import SplitRule

PUBFIG83 = Layout(
    "pubfig83",
    "http://vision.seas.harvard.edu/pubfig83/ (pubfig83.v1.tgz, Pinto et al. 2011)",
    contents="one folder of face images per person (83 folders); pubfig83.v1.tgz unpacks to "
    "pubfig83/<person>/, so extract it in the folder above dataset.root",
)
#: SUFR_ver1.3's README (Leibo, Liao & Poggio; klab.tch.harvard.edu/cbmm/other/SUFR_README.txt):
#: SUFR-W is SUFR_in_the_wild/ with the images and SUFR_in_the_wild_info.mat/.txt, the id and
#: name of the person in each image (ids 1 to 400). Image <n>.jpg is the n-th line of the .txt.
SUFRW = Layout(
    "sufrw",
    "http://cbmm.mit.edu/resources/data-sets (SUFR_ver1.3, Leibo, Liao & Poggio 2014)",
    contents="SUFR_in_the_wild/ with <n>.jpg and SUFR_in_the_wild_info.txt (or .mat)",
)
SUFRW_FOLDER = "SUFR_in_the_wild"
#: iCubWorld28 (pralab/secml's CDataLoaderICubWorld28; robotology.github.io/iCubWorld): 7
#: categories of 4 objects each, 4 acquisition days for training and 4 for test.
ICUBWORLD = Layout(
    "icubworld",
    "https://robotology.github.io/iCubWorld/ (iCubWorld28)",
    contents="iCubWorld28's train/ and test/ trees: day<d>/<category>/<category><k>/*.ppm",
)
ICUBWORLD_LABELS = ("category", "object")
SCENE67 = Layout(
    "scene67",
    "https://web.mit.edu/torralba/www/indoor.html",
    expected=("Images", "TrainImages.txt", "TestImages.txt"),
)


def _hidden(path: Path, folder: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(folder).parts)


def _images_below(folder: Path) -> list[Path]:
    """The image files at any depth below folder, sorted; hidden entries skipped."""
    return sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES and not _hidden(path, folder) and path.is_file()
    )


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def class_tree(layout: Layout, folder: Path) -> tuple[list[Path], list[int], list[str]]:
    """(image paths, labels, class names): one class per sub-folder of `folder` (sorted by
    name), its images found at any depth below it (sorted by path); hidden entries are skipped."""
    classes = [p.name for p in _subfolders(folder)]
    if not classes:
        raise layout.missing(folder, f"no class folders in {folder}")
    paths, labels = [], []
    for label, name in enumerate(classes):
        found = _images_below(folder / name)
        paths += found
        labels += [label] * len(found)
    return paths, labels, classes


def _rule_options(rule: SplitRule, min_images: int, expect, image_size, channels, fit, cache,
                  cache_dir) -> dict:  # fmt: skip
    return {"rule": rule, "min_images": min_images,
            **decoding(image_size, channels, fit, expect, cache, cache_dir)}  # fmt: skip


@register_dataset("pubfig83")
def load_pubfig83(
    root: str | os.PathLike,
    image_size: int = 64,
    channels: int = 3,
    fit: str = "stretch",
    train_per_class: int | None = 90,
    test_per_class: int | None = 10,
    test_fraction: float | None = None,
    split_seed: int = 0,
    min_images: int = 1,
    expect: Expect = UNCHECKED,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> InMemoryDataset:
    """PubFig83 (Pinto et al. 2011): 83-way identification, one folder of images per person,
    no official split: a seeded per-class rule."""
    root = PUBFIG83.check(root)
    paths, labels, classes = class_tree(PUBFIG83, root)
    return load_by_rule(
        PUBFIG83, root, paths, labels, classes,
        **_rule_options(SplitRule(train_per_class, test_per_class, test_fraction, split_seed),
                        min_images, expect, image_size, channels, fit, cache, cache_dir),
    )  # fmt: skip


def _sufrw_identities(folder: Path) -> tuple[list[int], list[str]]:
    """(person id, person name) of image 1, 2, ...: SUFR_in_the_wild_info.txt ('<id> # <name>'
    lines, line n for image n) or, without it, the struct `info` of SUFR_in_the_wild_info.mat."""
    text = folder / f"{SUFRW_FOLDER}_info.txt"
    if text.is_file():
        ids, names = [], []
        try:
            lines = text.read_text(errors="replace").splitlines()
        except OSError as error:
            raise SUFRW.corrupt(text, f"cannot read it ({error})") from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            person, sep, name = line.partition("#")
            if not sep or not person.strip().isdigit():
                raise SUFRW.corrupt(text, f"line {number} is not '<id> # <name>': {line!r}")
            ids.append(int(person))
            names.append(name.strip())
        return ids, names
    mat = folder / f"{SUFRW_FOLDER}_info.mat"
    if not mat.is_file():
        raise SUFRW.missing(folder.parent, f"no {text.name} or {mat.name} in {folder}")
    info = read_mat(SUFRW, mat, ("info",))["info"]
    try:
        ids = [int(v) for v in np.asarray(info["id"].item()).reshape(-1)]
        names = np.asarray(info["name"].item()).reshape(-1)
        names = [str(np.asarray(name).reshape(-1)[0]) for name in names]
    except (ValueError, IndexError, KeyError, TypeError) as error:
        raise SUFRW.corrupt(mat, f"info has no id and name fields per image ({error})") from None
    return ids, names


def sufrw_files(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """(image paths, labels, person names) of SUFR-W as shipped: image <n>.jpg of
    SUFR_in_the_wild/ shows the person on line n of the info file; labels number the people by
    id order. Every image listed must exist."""
    folder = root / SUFRW_FOLDER
    if not folder.is_dir():
        raise SUFRW.missing(root, f"no {SUFRW_FOLDER} folder in {root}")
    ids, names = _sufrw_identities(folder)
    people = sorted(set(ids))
    number = {person: label for label, person in enumerate(people)}
    name_of = dict(zip(ids, names, strict=True))
    paths = [folder / f"{n}.jpg" for n in range(1, len(ids) + 1)]
    absent = [path for path in paths if not path.is_file()]
    if absent:
        raise SUFRW.missing(
            root, f"{len(absent)} of the {len(paths)} images its info file lists are missing, "
            f"first {absent[0]}",
        )  # fmt: skip
    return paths, [number[person] for person in ids], [name_of[p] for p in people]


@register_dataset("sufrw")
def load_sufrw(
    root: str | os.PathLike,
    image_size: int = 64,
    channels: int = 3,
    fit: str = "stretch",
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    test_fraction: float | None = 0.2,
    split_seed: int = 0,
    min_images: int = 1,
    expect: Expect = UNCHECKED,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> InMemoryDataset:
    """SUFR-W (Leibo, Liao & Poggio 2014) as N-way identification of its people, read from the
    package as shipped; its protocol is pair verification, so the split is a seeded rule."""
    root = SUFRW.check(root)
    return load_by_rule(
        SUFRW, root, *sufrw_files(root),
        **_rule_options(SplitRule(train_per_class, test_per_class, test_fraction, split_seed),
                        min_images, expect, image_size, channels, fit, cache, cache_dir),
    )  # fmt: skip


def icubworld_tree(
    root: Path, split: str, days: list[int], labels: str
) -> tuple[list[Path], list[str]]:
    """(image paths, their category or object names) of split/day<d>/<category>/<object>/."""
    paths, names = [], []
    for day in days:
        folder = root / split / f"day{day}"
        if not folder.is_dir():
            raise ICUBWORLD.missing(root, f"no {split}/day{day} in {root}")
        for category in _subfolders(folder):
            objects = _subfolders(category)
            if not objects:
                raise ICUBWORLD.missing(
                    root, f"no object folders in {category} (expected {category.name}1, ...)"
                )
            for obj in objects:
                found = _images_below(obj)
                paths += found
                names += [category.name if labels == "category" else obj.name] * len(found)
    return paths, names


@register_dataset("icubworld")
def load_icubworld(
    root: str | os.PathLike,
    labels: str = "category",
    train_days: list[int] = (1, 2, 3, 4),
    test_days: list[int] = (1, 2, 3, 4),
    image_size: int = 64,
    channels: int = 3,
    fit: str = "stretch",
    expect: Expect = UNCHECKED,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> InMemoryDataset:
    """iCubWorld28's official split: train/day<d>/ for training, test/day<d>/ for test, labelled
    by category (7) or by object (28)."""
    if labels not in ICUBWORLD_LABELS:
        raise ValueError(f"icubworld: labels must be one of {ICUBWORLD_LABELS}, got {labels!r}")
    for key, days in (("train_days", train_days), ("test_days", test_days)):
        if not days or not set(days) <= {1, 2, 3, 4}:
            raise ValueError(f"icubworld: {key} must be some of 1, 2, 3, 4, got {days!r}")
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
    return load_image_files(
        ICUBWORLD, root, files, split=f"{labels}-days{days}",
        **decoding(image_size, channels, fit, expect, cache, cache_dir),
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
    expect: Expect = UNCHECKED,
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
        **decoding(image_size, channels, fit, expect, cache, cache_dir),
    )  # fmt: skip

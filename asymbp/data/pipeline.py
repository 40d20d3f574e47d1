"""From files to a cached in-memory dataset, the steps the dataset definitions share: arrays with
an official split (`load_arrays`, `load_idx_dataset` for the MNIST layout), and image files split
officially (`load_image_files`) or by a seeded rule (`load_by_rule`), each decoded, cached and
checked as a loader's `Decoding` says. Decoding happens once; later loads read the cache file
(asymbp.data.cache)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from asymbp.data.base import DatasetError, InMemoryDataset
from asymbp.data.cache import CacheKey, fingerprint, load_cached
from asymbp.data.decode import Decoding
from asymbp.data.formats.idx import IDX_FILES, find_idx_file, find_idx_files, read_idx_pair
from asymbp.data.formats.images import check_image_options, conform, decode_images
from asymbp.data.layout import Layout, fetch
from asymbp.data.splits import SplitRule, keep_classes


def load_arrays(
    dataset: str,
    root: Path,
    sources: Iterable[Path],
    read: Callable[[], InMemoryDataset],
    decoding: Decoding,
    where: Path,
) -> InMemoryDataset:
    """A dataset stored as arrays with an official split (IDX, CIFAR, SVHN, STL-10): read() once,
    `conform`ed to decoding's image_size, channels (None: as stored) and fit, cached, then
    checked against decoding.expect (errors name `where`).

    sources: the files read() reads; the cache file is rebuilt when one of them changes.
    """
    image_size, channels, fit = decoding.image_size, decoding.channels, decoding.fit
    check_image_options(dataset, image_size, channels, fit, native_ok=True)
    size = f"{image_size or 'orig'}px{channels or 'orig'}c"
    options = {"root": str(root), "image_size": image_size, "channels": channels, "fit": fit}
    key = CacheKey(dataset, "official", size, options, fingerprint(sources))

    def build() -> InMemoryDataset:
        data = read()
        return dataclasses.replace(
            data,
            train_images=conform(data.train_images, image_size, channels, fit),
            test_images=conform(data.test_images, image_size, channels, fit),
        )

    return decoding.expect.check_data(load_cached(key, build, decoding.cache_dir), where)


def arrays_dataset(
    layout: Layout,
    read: Callable[[str], tuple[tuple[Path, np.ndarray], tuple[Path, np.ndarray]]],
    num_classes: int,
) -> InMemoryDataset:
    """The dataset of read("train") and read("test"), each ((images path, uint8 (N, C, H, W)
    images), (labels path, int64 (N,) labels)); labels outside 0..num_classes-1 are a
    DatasetError naming their file."""
    tensors = []
    for split in ("train", "test"):
        (_, images), (labels_path, labels) = read(split)
        if labels.size and not 0 <= labels.min() <= labels.max() < num_classes:
            raise layout.corrupt(
                labels_path,
                f"holds labels {labels.min()}..{labels.max()}, outside 0..{num_classes - 1}",
            )
        tensors += [torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)]
    return InMemoryDataset(layout.dataset, *tensors, num_classes=num_classes)


def load_array_set(
    layout: Layout,
    root: str | os.PathLike,
    read: Callable[[Path, str], tuple[tuple[Path, np.ndarray], tuple[Path, np.ndarray]]],
    num_classes: int,
    get: Callable[[Path], object],
    download: bool,
    decoding: Decoding,
) -> InMemoryDataset:
    """An array dataset's loader (CIFAR, SVHN, STL-10): its files (layout.expected) under root,
    fetched by get(root) when download is true and they are missing, read(root, split) for
    "train" and "test" as `arrays_dataset` reads them, then `load_arrays`."""
    root = fetch(layout, root, download, get)
    return load_arrays(
        layout.dataset, root, [root / f for f in layout.expected],
        lambda: arrays_dataset(layout, lambda split: read(root, split), num_classes),
        decoding, root,
    )  # fmt: skip


def torchvision_index(layout: Layout, root: Path, make: Callable[[Path], object]):
    """make(root): the torchvision dataset that lists a dataset's files and labels; its errors
    become a DatasetError naming root."""
    try:
        return make(root)
    except (RuntimeError, OSError, ValueError, KeyError, IndexError) as error:
        problem = f"torchvision cannot read it ({type(error).__name__}: {error})"
        raise layout.corrupt(root, problem) from None


def require_listed(layout: Layout, root: Path, paths: list[Path], listed_by: str) -> None:
    """A DatasetError counting the files of `paths` (what `listed_by` lists) that are missing
    and naming the first: a partial copy stops here, before anything is decoded."""
    absent = [path for path in paths if not path.is_file()]
    if absent:
        raise layout.missing(
            root, f"{len(absent)} of the {len(paths)} images {listed_by} lists are missing, "
            f"first {absent[0]}",
        )  # fmt: skip


@dataclass
class ImageFiles:
    """A dataset's image files and their labels, per split, before decoding."""

    classes: list[str]
    train_paths: list[Path]
    train_labels: list[int]
    test_paths: list[Path]
    test_labels: list[int]

    @classmethod
    def by_rule(
        cls, paths: list[Path], labels: list[int], classes: list[str], rule: SplitRule
    ) -> ImageFiles:
        """Split one list of files by a seeded, stratified rule."""
        train, test = rule.apply(torch.as_tensor(labels, dtype=torch.long))
        train, test = train.tolist(), test.tolist()
        return cls(
            classes,
            [paths[i] for i in train],
            [labels[i] for i in train],
            [paths[i] for i in test],
            [labels[i] for i in test],
        )


def load_image_files(
    layout: Layout,
    root: Path,
    files: ImageFiles,
    decoding: Decoding,
    *,
    split: str,
) -> InMemoryDataset:
    """Decode the files of both splits once (or read them from the cache) into a dataset.

    split: a short name of the split for the cache file ("official", SplitRule.label). The cache
    file is keyed by the list of files and labels, so adding images makes a new one.
    decoding.expect is checked against the classes and file counts before anything is decoded.
    """
    image_size, channels, fit = decoding.image_size, decoding.channels, decoding.fit
    check_image_options(layout.dataset, image_size, channels, fit)
    decoding.expect.check(
        layout.dataset, root, len(files.classes), len(files.train_paths), len(files.test_paths)
    )
    for name, paths in (("training", files.train_paths), ("test", files.test_paths)):
        if not paths:
            raise layout.missing(root, f"no {name} images found in {root}")
    index = [[str(p) for p in files.train_paths], files.train_labels]
    index += [[str(p) for p in files.test_paths], files.test_labels]
    key = CacheKey(
        layout.dataset,
        split,
        f"{image_size}px{channels}c",
        {"root": str(root), "image_size": image_size, "channels": channels, "fit": fit,
         "files": fingerprint(index=index)},
        fingerprint(root / relative for relative in layout.expected),
    )  # fmt: skip

    def build() -> InMemoryDataset:
        paths = files.train_paths + files.test_paths
        images, kept = decode_images(layout, paths, image_size, channels, fit)
        labels = torch.tensor(files.train_labels + files.test_labels, dtype=torch.long)[kept]
        n_train = int(kept[: len(files.train_paths)].sum())
        return InMemoryDataset.from_pool(
            layout.dataset, images, labels, slice(None, n_train), slice(n_train, None),
            num_classes=len(files.classes),
        )  # fmt: skip

    return load_cached(key, build, decoding.cache_dir)


def load_by_rule(
    layout: Layout,
    root: Path,
    paths: list[Path],
    labels: list[int],
    classes: list[str],
    decoding: Decoding,
    *,
    rule: SplitRule,
    min_images: int = 1,
) -> InMemoryDataset:
    """A dataset without an official split: the classes with at least min_images images (N-way
    identification for the face sets), renumbered, then split by `rule` and decoded by
    `load_image_files`."""
    if min_images < 1:
        raise ValueError(f"{layout.dataset}: min_images must be >= 1, got {min_images}")
    index, labels, classes = keep_classes(
        torch.as_tensor(labels, dtype=torch.long), classes, min_images
    )
    files = ImageFiles.by_rule([paths[i] for i in index.tolist()], labels.tolist(), classes, rule)
    split = rule.label if min_images == 1 else f"min{min_images}-{rule.label}"
    return load_image_files(layout, root, files, decoding, split=split)


def load_idx_dataset(
    layout: Layout,
    root: str | os.PathLike | None,
    *,
    subdir: str,
    get: type,
    hint: str,
    download: bool,
    decoding: Decoding,
) -> InMemoryDataset:
    """An MNIST-layout dataset's loader: the four IDX_FILES in root or root/subdir (where the
    torchvision class `get` downloads them when download is true), conformed and cached.

    decoding's image_size and channels None keep those of the files; hint: how to get them."""
    name = layout.dataset
    if root is None:
        raise DatasetError(
            f"{name}: no dataset.root given; expected a folder holding {', '.join(IDX_FILES)} "
            f"(gzipped or not); {hint}"
        )
    root = Path(root).expanduser().absolute()

    def present(folder: Path) -> bool:
        return all(find_idx_file([folder, folder / subdir], stem) for stem in IDX_FILES)

    if download:
        fetch(layout, root, True, lambda r: get(r, download=True), present=present)
    paths = find_idx_files(root, name, hint=hint, subdirs=(subdir,))
    return load_arrays(
        name, root, paths, lambda: read_idx_pair(paths, name, hint=hint), decoding, paths[0].parent
    )

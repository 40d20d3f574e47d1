"""CIFAR-10 and CIFAR-100 (Python pickles), SVHN (.mat) and STL-10 (raw binaries), in the folder
layouts of torchvision's classes, which also download them (dataset.download=true).

The files are read here with the format code of torchvision's classes (pickle with latin1 for
CIFAR, the same reshapes and transposes), not through the classes: those first compare md5 sums of
the official files, which rejects any other copy (mirrors, the tiny copies of the tests), and a
decoding error inside them does not say which file is bad. Read here, each error names its file.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import CIFAR10, CIFAR100, STL10, SVHN

from asymbp.data.base import UNCHECKED, Expect, InMemoryDataset
from asymbp.data.layout import Layout, fetch
from asymbp.data.matlab import read_mat
from asymbp.data.pipeline import load_arrays
from asymbp.data.registry import Loader, register_dataset

SPLITS = ("train", "test")


@dataclass(frozen=True)
class ArraySet:
    """One array dataset: its files, its reader, the torchvision class that downloads it.

    read(spec, root, split) -> (uint8 images (N, C, H, W), int64 labels (N,)) of "train"/"test".
    """

    layout: Layout
    read: Callable[[ArraySet, Path, str], tuple[np.ndarray, np.ndarray]]
    download: Callable[[Path], object]
    num_classes: int
    image_size: int

    def check_labels(self, path: Path, labels: np.ndarray) -> np.ndarray:
        if labels.size and not 0 <= labels.min() <= labels.max() < self.num_classes:
            raise self.layout.corrupt(
                path,
                f"holds labels {labels.min()}..{labels.max()}, outside 0..{self.num_classes - 1}",
            )
        return labels


def _cifar_files(cls: type[CIFAR10], splits: tuple[str, ...] = SPLITS) -> tuple[str, ...]:
    """The batch files of a CIFAR class, relative to root: cifar-10-batches-py/data_batch_1..."""
    lists = [getattr(cls, f"{split}_list") for split in splits]
    return tuple(f"{cls.base_folder}/{name}" for names in lists for name, _ in names)


def _cifar_batch(spec: ArraySet, path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as file:
            entry = pickle.load(file, encoding="latin1")
        data = np.asarray(entry["data"], dtype=np.uint8)
        labels = np.asarray(entry[label_key], dtype=np.int64).reshape(-1)
    # Unpickling a damaged file can raise almost anything (UnpicklingError, EOFError,
    # KeyError, UnicodeDecodeError...): all mean the file is not a CIFAR batch.
    except Exception as error:
        problem = f"not a CIFAR pickle ({type(error).__name__}: {error})"
        raise spec.layout.corrupt(path, problem) from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise spec.layout.corrupt(
            path, f"holds data of shape {data.shape} and {len(labels)} labels, expected "
            "(N, 3072) and N labels",
        )  # fmt: skip
    return data.reshape(-1, 3, 32, 32), spec.check_labels(path, labels)


def _cifar_reader(cls: type[CIFAR10], label_key: str):
    def read(spec: ArraySet, root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
        files = _cifar_files(cls, (split,))
        batches = [_cifar_batch(spec, root / name, label_key) for name in files]
        return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])

    return read


def _read_svhn(spec: ArraySet, root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    path = root / SVHN.split_list[split][1]
    content = read_mat(spec.layout, path, ("X", "y"))
    images, labels = content["X"], content["y"].reshape(-1).astype(np.int64)
    if images.ndim != 4 or images.shape[:3] != (32, 32, 3) or images.shape[3] != labels.size:
        raise spec.layout.corrupt(
            path, f"X has shape {images.shape} for {labels.size} labels, expected (32, 32, 3, N)"
        )
    labels[labels == 10] = 0  # SVHN files label the digit 0 as 10 (torchvision's mapping too)
    images = images.astype(np.uint8, copy=False).transpose(3, 2, 0, 1)
    return images, spec.check_labels(path, labels)


def _read_bytes(spec: ArraySet, path: Path) -> np.ndarray:
    try:
        return np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise spec.layout.corrupt(path, f"cannot read it ({error})") from None


def _read_stl10(spec: ArraySet, root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    names = STL10.train_list[:2] if split == "train" else STL10.test_list
    images_path, labels_path = (root / STL10.base_folder / name for name, _ in names)
    pixels = _read_bytes(spec, images_path)
    if pixels.size % (3 * 96 * 96):
        raise spec.layout.corrupt(
            images_path, f"truncated: {pixels.size} bytes is not a whole number of 3x96x96 images"
        )
    # Stored column-major (MATLAB order): transposed as torchvision does.
    images = pixels.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)
    labels = _read_bytes(spec, labels_path).astype(np.int64) - 1  # the files count from 1
    if labels.size != images.shape[0]:
        raise spec.layout.corrupt(
            images_path, f"holds {images.shape[0]} images, {labels_path} holds {labels.size} "
            "labels: is one of them truncated?",
        )  # fmt: skip
    return images, spec.check_labels(labels_path, labels)


def _stl10_files() -> tuple[str, ...]:
    """The four files of the labelled splits (not the 2.6 GB unlabeled_X.bin), relative to root."""
    names = STL10.train_list[:2] + STL10.test_list
    return tuple(f"{STL10.base_folder}/{name}" for name, _ in names)


def _download_svhn(root: Path) -> None:
    for split in SPLITS:
        SVHN(root, split=split, download=True)


CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
ARRAY_SETS = {
    "cifar10": ArraySet(
        Layout("cifar10", CIFAR_URL, _cifar_files(CIFAR10), download=True),
        _cifar_reader(CIFAR10, "labels"),
        lambda root: CIFAR10(root, download=True),
        num_classes=10,
        image_size=32,
    ),
    "cifar100": ArraySet(
        Layout("cifar100", CIFAR_URL, _cifar_files(CIFAR100), download=True),
        _cifar_reader(CIFAR100, "fine_labels"),
        lambda root: CIFAR100(root, download=True),
        num_classes=100,
        image_size=32,
    ),
    "svhn": ArraySet(
        Layout(
            "svhn",
            "http://ufldl.stanford.edu/housenumbers/",
            tuple(SVHN.split_list[split][1] for split in SPLITS),
            download=True,
        ),
        _read_svhn,
        _download_svhn,
        num_classes=10,
        image_size=32,
    ),
    "stl10": ArraySet(
        Layout("stl10", "https://cs.stanford.edu/~acoates/stl10/", _stl10_files(), download=True),
        _read_stl10,
        lambda root: STL10(root, download=True),
        num_classes=10,
        image_size=96,
    ),
}


def _array_loader(name: str, spec: ArraySet) -> Loader:
    """The registered loader of an ArraySet; its keywords are the dataset config's keys."""

    def load(
        root: str | os.PathLike,
        image_size: int = spec.image_size,
        channels: int = 3,
        download: bool = False,
        expect: Expect = UNCHECKED,
        cache: bool = True,
        cache_dir: str | os.PathLike | None = None,
    ) -> InMemoryDataset:
        root = fetch(spec.layout, root, download, spec.download)

        def read() -> InMemoryDataset:
            (train_x, train_y), (test_x, test_y) = (spec.read(spec, root, s) for s in SPLITS)
            return InMemoryDataset(
                name,
                torch.from_numpy(np.ascontiguousarray(train_x)),
                torch.from_numpy(train_y),
                torch.from_numpy(np.ascontiguousarray(test_x)),
                torch.from_numpy(test_y),
                spec.num_classes,
            )

        data = load_arrays(
            name, root, [root / path for path in spec.layout.expected], read,
            image_size=image_size, channels=channels, cache_dir=cache_dir if cache else None,
        )  # fmt: skip
        return expect.check_data(data, root)

    load.__name__ = load.__qualname__ = f"load_{name}"
    load.__doc__ = f"{name}: the official train/test split of {', '.join(spec.layout.expected)}."
    return load


for _name, _spec in ARRAY_SETS.items():
    register_dataset(_name)(_array_loader(_name, _spec))

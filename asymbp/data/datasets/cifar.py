"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009): Python pickles of the official split, 50000 / 10000
32x32 colour images, in torchvision's layout (root/cifar-10-batches-py/, root/cifar-100-python/);
torchvision's classes download them (dataset.download=true).

The pickles are read here with the format code of torchvision's classes (pickle with latin1, the
same reshape), not through the classes: those first compare md5 sums of the official files,
which rejects any other copy (mirrors, the tiny copies of the tests), and a decoding error inside
them does not say which file is bad. Read here, each error names its file.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
from torchvision.datasets import CIFAR10, CIFAR100

from asymbp.data.base import InMemoryDataset
from asymbp.data.decode import Decoding
from asymbp.data.layout import Layout
from asymbp.data.pipeline import load_array_set
from asymbp.data.registry import register_dataset

URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


def batch_files(cls: type[CIFAR10], split: str | None = None) -> tuple[str, ...]:
    """The batch files of a CIFAR class relative to root (cifar-10-batches-py/data_batch_1...),
    of one split or (None) both."""
    lists = [getattr(cls, f"{s}_list") for s in (("train", "test") if split is None else (split,))]
    return tuple(f"{cls.base_folder}/{name}" for names in lists for name, _ in names)


def read_batch(layout: Layout, path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 (N, 3, 32, 32) images, int64 (N,) labels) of one CIFAR pickle."""
    try:
        with open(path, "rb") as file:
            entry = pickle.load(file, encoding="latin1")
        data = np.asarray(entry["data"], dtype=np.uint8)
        labels = np.asarray(entry[label_key], dtype=np.int64).reshape(-1)
    # Unpickling a damaged file can raise almost anything (UnpicklingError, EOFError,
    # KeyError, UnicodeDecodeError...): all mean the file is not a CIFAR batch.
    except Exception as error:
        problem = f"not a CIFAR pickle ({type(error).__name__}: {error})"
        raise layout.corrupt(path, problem) from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise layout.corrupt(
            path, f"holds data of shape {data.shape} and {len(labels)} labels, expected "
            "(N, 3072) and N labels",
        )  # fmt: skip
    return data.reshape(-1, 3, 32, 32), labels


def split_reader(layout: Layout, files: dict, label_key: str):
    """read(root, split) of `load_array_set`: the split's batch files (files[split]) joined;
    bad labels are reported against the split's last file."""

    def read(root: Path, split: str):
        paths = [root / f for f in files[split]]
        batches = [read_batch(layout, path, label_key) for path in paths]
        images = np.concatenate([images for images, _ in batches])
        labels = np.concatenate([labels for _, labels in batches])
        return (paths[0], images), (paths[-1], labels)

    return read


CIFAR10_FILES = {split: batch_files(CIFAR10, split) for split in ("train", "test")}
CIFAR100_FILES = {split: batch_files(CIFAR100, split) for split in ("train", "test")}
CIFAR10_LAYOUT = Layout("cifar10", URL, batch_files(CIFAR10), download=True)
CIFAR100_LAYOUT = Layout("cifar100", URL, batch_files(CIFAR100), download=True)


@register_dataset("cifar10")
def load_cifar10(root: str | os.PathLike, download: bool, decoding: Decoding) -> InMemoryDataset:
    """CIFAR-10: data_batch_1..5 (train) and test_batch (test), key "labels", 10 classes."""
    return load_array_set(
        CIFAR10_LAYOUT, root, split_reader(CIFAR10_LAYOUT, CIFAR10_FILES, "labels"), 10,
        lambda r: CIFAR10(r, download=True), download, decoding,
    )  # fmt: skip


@register_dataset("cifar100")
def load_cifar100(root: str | os.PathLike, download: bool, decoding: Decoding) -> InMemoryDataset:
    """CIFAR-100: train and test, key "fine_labels" (the 100 fine classes)."""
    return load_array_set(
        CIFAR100_LAYOUT, root, split_reader(CIFAR100_LAYOUT, CIFAR100_FILES, "fine_labels"), 100,
        lambda r: CIFAR100(r, download=True), download, decoding,
    )  # fmt: skip

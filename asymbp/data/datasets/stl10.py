"""STL-10 (Coates et al. 2011): the raw binaries of stl10_binary/ (train_X.bin, train_y.bin,
test_X.bin, test_y.bin; uint8 images stored column-major, labels 1..10), 5000 / 8000 96x96 colour
images; the 100000 unlabelled images are not read. torchvision's STL10 downloads them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from torchvision.datasets import STL10

from asymbp.data.base import InMemoryDataset
from asymbp.data.decode import Decoding
from asymbp.data.layout import Layout
from asymbp.data.pipeline import load_array_set
from asymbp.data.registry import register_dataset

#: The four files of the labelled splits (not the 2.6 GB unlabeled_X.bin), relative to root.
FILES = {
    "train": tuple(f"{STL10.base_folder}/{name}" for name, _ in STL10.train_list[:2]),
    "test": tuple(f"{STL10.base_folder}/{name}" for name, _ in STL10.test_list),
}
LAYOUT = Layout(
    "stl10", "https://cs.stanford.edu/~acoates/stl10/", FILES["train"] + FILES["test"], True
)


def _read_bytes(path: Path) -> np.ndarray:
    try:
        return np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise LAYOUT.corrupt(path, f"cannot read it ({error})") from None


def read_split(root: Path, split: str) -> tuple[tuple[Path, np.ndarray], tuple[Path, np.ndarray]]:
    """uint8 (N, 3, 96, 96) images and int64 labels 0..9 of one split."""
    images_path, labels_path = (root / name for name in FILES[split])
    pixels = _read_bytes(images_path)
    if pixels.size % (3 * 96 * 96):
        raise LAYOUT.corrupt(
            images_path, f"truncated: {pixels.size} bytes is not a whole number of 3x96x96 images"
        )
    # Stored column-major (MATLAB order): transposed as torchvision does.
    images = pixels.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)
    labels = _read_bytes(labels_path).astype(np.int64) - 1  # the files count from 1
    if labels.size != images.shape[0]:
        raise LAYOUT.corrupt(
            images_path, f"holds {images.shape[0]} images, {labels_path} holds {labels.size} "
            "labels: is one of them truncated?",
        )  # fmt: skip
    return (images_path, images), (labels_path, labels)


@register_dataset("stl10")
def load_stl10(root: str | os.PathLike, download: bool, decoding: Decoding) -> InMemoryDataset:
    """STL-10's official split with all 5000 labelled training images, 10 classes."""
    return load_array_set(
        LAYOUT, root, read_split, 10, lambda r: STL10(r, download=True), download, decoding
    )

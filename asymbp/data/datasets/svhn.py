"""SVHN (Netzer et al. 2011), cropped digits: train_32x32.mat and test_32x32.mat (MATLAB arrays X
of shape (32, 32, 3, N) and labels y, the digit 0 stored as 10), 73257 / 26032 32x32 colour
images; the 531131 "extra" images are not read. torchvision's SVHN downloads them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from torchvision.datasets import SVHN

from asymbp.data.base import InMemoryDataset
from asymbp.data.decode import Decoding
from asymbp.data.formats.matlab import read_mat
from asymbp.data.layout import Layout
from asymbp.data.pipeline import load_array_set
from asymbp.data.registry import register_dataset

FILES = {split: SVHN.split_list[split][1] for split in ("train", "test")}
LAYOUT = Layout("svhn", "http://ufldl.stanford.edu/housenumbers/", tuple(FILES.values()), True)


def read_split(root: Path, split: str) -> tuple[tuple[Path, np.ndarray], tuple[Path, np.ndarray]]:
    """uint8 (N, 3, 32, 32) images and int64 labels 0..9 of train_32x32.mat or test_32x32.mat."""
    path = root / FILES[split]
    content = read_mat(LAYOUT, path, ("X", "y"))
    images, labels = content["X"], content["y"].reshape(-1).astype(np.int64)
    if images.ndim != 4 or images.shape[:3] != (32, 32, 3) or images.shape[3] != labels.size:
        raise LAYOUT.corrupt(
            path, f"X has shape {images.shape} for {labels.size} labels, expected (32, 32, 3, N)"
        )
    labels[labels == 10] = 0  # SVHN files label the digit 0 as 10 (torchvision's mapping too)
    return (path, images.astype(np.uint8, copy=False).transpose(3, 2, 0, 1)), (path, labels)


def _download(root: Path) -> None:
    for split in FILES:
        SVHN(root, split=split, download=True)


@register_dataset("svhn")
def load_svhn(root: str | os.PathLike, download: bool, decoding: Decoding) -> InMemoryDataset:
    """SVHN's official split without "extra", 10 classes."""
    return load_array_set(LAYOUT, root, read_split, 10, _download, download, decoding)

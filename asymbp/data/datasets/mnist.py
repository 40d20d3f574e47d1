"""MNIST (LeCun et al. 1998): the four IDX files of the official split, 60000 / 10000 28x28 grey
digits, in root or in torchvision's root/MNIST/raw."""

from __future__ import annotations

import os

from torchvision.datasets import MNIST

from asymbp.data.base import InMemoryDataset
from asymbp.data.decode import Decoding
from asymbp.data.formats.idx import IDX_FILES
from asymbp.data.layout import Layout
from asymbp.data.pipeline import load_idx_dataset
from asymbp.data.registry import register_dataset

LAYOUT = Layout(
    "mnist", "http://yann.lecun.com/exdb/mnist/", contents=", ".join(IDX_FILES), download=True
)
HINT = (
    "get them from http://yann.lecun.com/exdb/mnist/ and set dataset.root=DIR "
    "(or set dataset.download=true)"
)


@register_dataset("mnist")
def load_mnist(
    root: str | os.PathLike | None, download: bool, decoding: Decoding
) -> InMemoryDataset:
    """The official split of the four IDX files in root (gzipped or not; any number of images,
    of any size); decoding's image_size and channels None keep those of the files."""
    return load_idx_dataset(
        LAYOUT, root, subdir="MNIST/raw", get=MNIST, hint=HINT, download=download, decoding=decoding
    )

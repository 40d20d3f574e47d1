"""Fashion-MNIST (Xiao et al. 2017): the four IDX files of the official split, 60000 / 10000 28x28
grey images of 10 clothing classes, in root or in torchvision's root/FashionMNIST/raw. Debian's
package dataset-fashion-mnist installs them in DEBIAN_FASHION_MNIST."""

from __future__ import annotations

import os
from pathlib import Path

from torchvision.datasets import FashionMNIST

from asymbp.data.base import InMemoryDataset
from asymbp.data.decode import Decoding
from asymbp.data.formats.idx import IDX_FILES
from asymbp.data.layout import Layout
from asymbp.data.pipeline import load_idx_dataset
from asymbp.data.registry import register_dataset

#: Where Debian's dataset-fashion-mnist package puts the four .gz files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
LAYOUT = Layout(
    "fashion_mnist",
    "https://github.com/zalandoresearch/fashion-mnist",
    contents=", ".join(IDX_FILES),
    download=True,
)
HINT = (
    "get them from https://github.com/zalandoresearch/fashion-mnist or on Debian "
    f"'apt-get install dataset-fashion-mnist' and set dataset.root={DEBIAN_FASHION_MNIST}"
    " (or set dataset.download=true)"
)


@register_dataset("fashion_mnist")
def load_fashion_mnist(
    root: str | os.PathLike | None, download: bool, decoding: Decoding
) -> InMemoryDataset:
    """The official split of the four IDX files in root (gzipped or not; any number of images,
    of any size); decoding's image_size and channels None keep those of the files."""
    return load_idx_dataset(
        LAYOUT, root, subdir="FashionMNIST/raw", get=FashionMNIST, hint=HINT, download=download,
        decoding=decoding,
    )  # fmt: skip

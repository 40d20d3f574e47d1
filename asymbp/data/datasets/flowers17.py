"""Oxford Flowers-17 (Nilsback & Zisserman 2006): jpg/image_0001.jpg ... image_1360.jpg, 80
images per class in class order, and datasplits.mat with the three official splits (variables
trn1..3, val1..3, tst1..3: 1-based image numbers; 40, 20 and 20 per class)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np

from asymbp.data.base import InMemoryDataset
from asymbp.data.decode import Decoding
from asymbp.data.formats.matlab import read_mat
from asymbp.data.layout import Layout
from asymbp.data.pipeline import ImageFiles, load_image_files
from asymbp.data.registry import register_dataset

FLOWERS17 = Layout(
    "flowers17",
    "https://www.robots.ox.ac.uk/~vgg/data/flowers/17/",
    expected=("jpg", "datasplits.mat"),
)
NUM_CLASSES = 17
IMAGES_PER_CLASS = 80
PARTS = ("trn", "val", "tst")


def _image_numbers(path: Path, split: int) -> dict[str, np.ndarray]:
    content = read_mat(FLOWERS17, path, tuple(f"{part}{split}" for part in PARTS))
    numbers = {part: content[f"{part}{split}"].reshape(-1).astype(np.int64) for part in PARTS}
    for part, values in numbers.items():
        if values.size and not 1 <= values.min() <= values.max() <= NUM_CLASSES * IMAGES_PER_CLASS:
            raise FLOWERS17.corrupt(
                path, f"{part}{split} holds image numbers {values.min()}..{values.max()}, "
                f"outside 1..{NUM_CLASSES * IMAGES_PER_CLASS}",
            )  # fmt: skip
    return numbers


@register_dataset("flowers17")
def load_flowers17(
    root: str | os.PathLike, split: Literal[1, 2, 3], train_on_val: bool, decoding: Decoding
) -> InMemoryDataset:
    """Official split number `split` (1, 2 or 3): trn (plus val when train_on_val) for training,
    tst for test. Image n belongs to class (n - 1) // 80."""
    root = FLOWERS17.check(root)
    numbers = _image_numbers(root / "datasplits.mat", split)
    train = np.concatenate([numbers["trn"], numbers["val"]]) if train_on_val else numbers["trn"]

    def listed(values: np.ndarray) -> tuple[list[Path], list[int]]:
        paths = [root / "jpg" / f"image_{n:04d}.jpg" for n in values.tolist()]
        return paths, [(n - 1) // IMAGES_PER_CLASS for n in values.tolist()]

    classes = [str(c) for c in range(NUM_CLASSES)]
    files = ImageFiles(classes, *listed(train), *listed(numbers["tst"]))
    label = f"split{split}" + ("+val" if train_on_val else "")
    return load_image_files(FLOWERS17, root, files, decoding, split=label)

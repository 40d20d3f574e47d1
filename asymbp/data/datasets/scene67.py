"""MIT Indoor Scene-67 (Quattoni & Torralba 2009): 15620 images of 67 indoor scene classes under
Images/<class>/, with the official split TrainImages.txt and TestImages.txt (80 and 20 per
class, 'class/file.jpg' lines)."""

from __future__ import annotations

import os
from pathlib import Path

from asymbp.data.base import InMemoryDataset
from asymbp.data.decode import Decoding
from asymbp.data.layout import Layout
from asymbp.data.pipeline import ImageFiles, load_image_files
from asymbp.data.registry import register_dataset

SCENE67 = Layout(
    "scene67",
    "https://web.mit.edu/torralba/www/indoor.html",
    expected=("Images", "TrainImages.txt", "TestImages.txt"),
)


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
def load_scene67(root: str | os.PathLike, decoding: Decoding) -> InMemoryDataset:
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
    return load_image_files(SCENE67, root, files, decoding, split="official")

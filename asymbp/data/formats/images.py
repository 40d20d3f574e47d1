"""Images as uint8 tensors of one size: image files (JPEG, PNG, PPM, ...) found in folders,
decoded, resized and converted to grey or RGB (a few unreadable files skipped with a warning),
arrays resized."""

from __future__ import annotations

import os
import struct
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from asymbp.data.layout import DatasetWarning, Layout

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
)
#: How an image's aspect ratio is fitted to the square: "stretch" resizes both sides (keeps the
#: whole picture), "crop" scales the shorter side to the size and cuts the centre square.
FITS = ("stretch", "crop")
MODES = {1: "L", 3: "RGB"}
#: Unreadable files are skipped while they are at most this fraction (or one file); beyond it the
#: copy is taken as broken and loading fails, naming the first bad file.
MAX_UNREADABLE = 0.01
#: What Pillow raises for a truncated, corrupt or non-image file.
UNREADABLE = (OSError, SyntaxError, ValueError, EOFError, struct.error)
# Pillow releases the GIL while decoding, so threads decode in parallel.
WORKERS = min(8, os.cpu_count() or 1)
CHUNK = 4096


def _hidden(path: Path, folder: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(folder).parts)


def images_below(folder: Path) -> list[Path]:
    """The image files (IMAGE_SUFFIXES) at any depth below folder, sorted by path; hidden entries
    (.DS_Store, ._name, .git/) skipped."""
    return sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES and not _hidden(path, folder) and path.is_file()
    )


def subfolders(folder: Path) -> list[Path]:
    """The folders directly in folder, sorted by name; hidden ones skipped."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def check_image_options(
    dataset: str, image_size, channels, fit: str = "stretch", *, native_ok: bool = False
) -> None:
    """native_ok: None is allowed for image_size and channels (keep those of the files)."""
    if not (native_ok and image_size is None) and (
        not isinstance(image_size, int) or image_size < 1
    ):
        raise ValueError(f"{dataset}: image_size must be an integer >= 1, got {image_size!r}")
    if not (native_ok and channels is None) and channels not in MODES:
        raise ValueError(f"{dataset}: channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    if fit not in FITS:
        raise ValueError(f"{dataset}: fit must be one of {FITS}, got {fit!r}")


def decode_image(path: str | os.PathLike, image_size: int, channels: int, fit: str) -> np.ndarray:
    """One image file as a uint8 (image_size, image_size, channels) array."""
    mode = MODES[channels]
    with Image.open(path) as image:
        # JPEG only: decode at the smallest 1/2, 1/4 or 1/8 scale still >= the target (fast).
        image.draft(mode, (image_size, image_size))
        image = image.convert(mode)
    size = (image_size, image_size)
    if fit == "crop":
        image = ImageOps.fit(image, size, Image.Resampling.BILINEAR)
    else:
        image = image.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(image).reshape(image_size, image_size, channels)


def decode_images(
    layout: Layout, paths: list[Path], image_size: int, channels: int, fit: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 (N, C, S, S) images, bool mask of the paths that decoded) for image files.

    Unreadable files are skipped with a DatasetWarning that counts them; more than
    MAX_UNREADABLE of them is a DatasetError naming the first one.
    """
    pixels = np.empty((len(paths), image_size, image_size, channels), dtype=np.uint8)

    def decode_into(i: int) -> Exception | None:
        try:
            pixels[i] = decode_image(paths[i], image_size, channels, fit)
        except UNREADABLE as error:
            return error
        return None

    with ThreadPoolExecutor(WORKERS) as pool:
        errors = list(pool.map(decode_into, range(len(paths))))
    failed = [(path, error) for path, error in zip(paths, errors, strict=True) if error]
    _report_unreadable(layout, failed, len(paths))
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2)
    kept = torch.tensor([error is None for error in errors], dtype=torch.bool)
    return (images[kept] if failed else images).contiguous(), kept


def _report_unreadable(layout: Layout, failed: list, total: int) -> None:
    if not failed:
        return
    first, error = failed[0]
    if len(failed) > max(1, int(MAX_UNREADABLE * total)):
        raise layout.corrupt(
            first,
            f"unreadable image ({error}); {len(failed)} of {total} images are unreadable, more "
            f"than {MAX_UNREADABLE:.0%}: is the copy complete?",
        )
    warnings.warn(
        f"{layout.dataset}: skipped {len(failed)} unreadable image(s) of {total} "
        f"(first: {first}: {error})",
        DatasetWarning,
        stacklevel=3,
    )


def _chunked(images: torch.Tensor, transform) -> torch.Tensor:
    """transform(float chunk) -> rounded uint8, chunk by chunk (a float copy of a whole dataset
    would take 4x its memory)."""
    parts = [
        transform(images[i : i + CHUNK].float()).round_().clamp_(0, 255).to(torch.uint8)
        for i in range(0, images.shape[0], CHUNK)
    ]
    return torch.cat(parts) if parts else images


def conform(
    images: torch.Tensor, image_size: int | None, channels: int | None, fit: str = "stretch"
) -> torch.Tensor:
    """uint8 (N, C, H, W) images with `channels` channels (3 -> 1: ITU-R 601 luma as Pillow's
    "L"; 1 -> 3: grey repeated) and image_size x image_size pixels (antialiased bilinear; fit
    "crop" first cuts the centre square of non-square images). None keeps what the files hold."""
    if channels is not None and channels != images.shape[1]:
        if channels == 3:
            images = images.expand(-1, 3, -1, -1)
        else:
            luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = _chunked(images, lambda x: (x * luma).sum(1, keepdim=True))
    height, width = images.shape[-2:]
    if image_size is not None and fit == "crop" and height != width:
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        images = images[..., top : top + side, left : left + side]
    if image_size is not None and tuple(images.shape[-2:]) != (image_size, image_size):
        size = (image_size, image_size)
        images = _chunked(images, lambda x: F.interpolate(x, size, mode="bilinear", antialias=True))
    return images.contiguous()

"""IDX files (LeCun's MNIST format, also Fashion-MNIST's), and a dataset stored as four of them.

MNIST and Fashion-MNIST are read with the IDX reader here, not torchvision's classes: those want
their own folder (root/MNIST/raw, files un-gzipped), whereas this reader takes the files gzipped or
not, in root or in torchvision's folder, any number of images, and names a bad file. The classes
serve for dataset.download=true (they download into root/MNIST/raw, which is looked in; see
asymbp.data.pipeline.load_idx_dataset).

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one
big-endian uint32 per dimension, then the values, big-endian, in C order. Each file may be
gzipped (`.gz`).
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from asymbp.data.base import DatasetError, InMemoryDataset

#: IDX type code -> big-endian numpy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
IMAGES_MAGIC = 0x00000803  # uint8, 3 dimensions (N, H, W)
LABELS_MAGIC = 0x00000801  # uint8, 1 dimension (N,)

#: The four files of an MNIST-layout dataset: (train images, train labels, test ones).
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)



def _open(path: Path):
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def read_idx(path: str | os.PathLike, magic: int | None = None) -> torch.Tensor:
    """The array stored in an IDX file (gzipped when its name ends in .gz), as a tensor.

    magic: when given, the file's magic number must equal it (IMAGES_MAGIC, LABELS_MAGIC).
    Raises DatasetError naming the file when it is missing, unreadable, has a bad magic number,
    or holds more or fewer bytes than its header declares.
    """
    path = Path(path)
    try:
        with _open(path) as file:
            data = file.read()
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except (OSError, EOFError, zlib.error) as error:
        raise DatasetError(f"{path}: cannot read it ({error})") from None

    if len(data) < 4:
        raise DatasetError(f"{path}: truncated: {len(data)} bytes, shorter than an IDX header")
    found = int.from_bytes(data[:4], "big")
    if magic is not None and found != magic:
        raise DatasetError(f"{path}: bad magic number 0x{found:08x}, expected 0x{magic:08x}")
    if data[:2] != b"\0\0" or data[2] not in IDX_DTYPES:
        raise DatasetError(f"{path}: bad magic number 0x{found:08x}: not an IDX file")
    dtype, ndim = IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path}: truncated: the header of {ndim} dimensions is cut short")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    declared = math.prod(shape) * dtype.itemsize
    held = len(data) - header
    if held != declared:
        problem = "truncated" if held < declared else "trailing bytes"
        raise DatasetError(
            f"{path}: {problem}: holds {held} data bytes, its header declares shape {shape} "
            f"of {dtype.itemsize}-byte values = {declared} bytes"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))


def write_idx(path: str | os.PathLike, values: torch.Tensor | np.ndarray) -> Path:
    """Write `values` as an IDX file (gzipped when the name ends in .gz); returns the path."""
    array = np.asarray(values)
    codes = {dtype.newbyteorder("="): code for code, dtype in IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise TypeError(f"IDX cannot store {array.dtype}; types: {sorted(map(str, codes))}")
    header = bytes([0, 0, codes[native], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path = Path(path)
    with gzip.open(path, "wb") if path.name.endswith(".gz") else open(path, "wb") as file:
        file.write(header + np.ascontiguousarray(array, dtype=IDX_DTYPES[codes[native]]).tobytes())
    return path


def find_idx_file(directories: list[Path], stem: str) -> Path | None:
    for directory in directories:
        for candidate in (directory / stem, directory / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
    return None


def find_idx_files(
    root: str | os.PathLike, dataset_name: str, *, hint: str = "", subdirs: tuple[str, ...] = ()
) -> list[Path]:
    """The paths of the four IDX_FILES (each gzipped or not) in root or one of its subdirs."""
    root = Path(root).expanduser()
    directories = [root] + [root / sub for sub in subdirs]
    paths = []
    for stem in IDX_FILES:
        path = find_idx_file(directories, stem)
        if path is None:
            where = root if root.is_dir() else f"{root} (no such directory)"
            raise DatasetError(f"{dataset_name}: no {stem}(.gz) in {where}; {_expected(hint)}")
        paths.append(path)
    return paths


def _expected(hint: str) -> str:
    suffix = f"; {hint}" if hint else ""
    return f"expected the four IDX files {', '.join(IDX_FILES)} (gzipped or not){suffix}"


def read_idx_pair(
    paths: list[Path], dataset_name: str, *, num_classes: int = 10, hint: str = ""
) -> InMemoryDataset:
    """The dataset in the four IDX files `paths` (in IDX_FILES order): uint8 (N, 1, H, W)
    images, int64 (N,) labels; the sample counts and image size are read from the files."""
    suffix = f"; {hint}" if hint else ""

    def read(path: Path, magic: int) -> torch.Tensor:
        try:
            return read_idx(path, magic)
        except DatasetError as error:
            raise DatasetError(f"{dataset_name}: {error}; {_expected(hint)}") from None

    tensors = {}
    for split, images_path, labels_path in (("train", *paths[:2]), ("test", *paths[2:])):
        images, labels = read(images_path, IMAGES_MAGIC), read(labels_path, LABELS_MAGIC)
        if images.shape[0] != labels.shape[0]:
            raise DatasetError(
                f"{dataset_name}: {images_path} holds {images.shape[0]} images but {labels_path} "
                f"holds {labels.shape[0]} labels{suffix}"
            )
        if labels.numel() and int(labels.max()) >= num_classes:
            raise DatasetError(
                f"{dataset_name}: {labels_path} holds label {int(labels.max())}, "
                f"expected labels 0..{num_classes - 1}{suffix}"
            )
        tensors[split] = (images.unsqueeze(1), labels.long())
    if tensors["train"][0].shape[1:] != tensors["test"][0].shape[1:]:
        raise DatasetError(
            f"{dataset_name}: train images {tuple(tensors['train'][0].shape[2:])} and test images "
            f"{tuple(tensors['test'][0].shape[2:])} in {paths[0].parent} differ in size{suffix}"
        )
    return InMemoryDataset(
        name=dataset_name,
        train_images=tensors["train"][0],
        train_labels=tensors["train"][1],
        test_images=tensors["test"][0],
        test_labels=tensors["test"][1],
        num_classes=num_classes,
    )


def load_idx_pair(
    root: str | os.PathLike,
    dataset_name: str,
    *,
    num_classes: int = 10,
    hint: str = "",
    subdirs: tuple[str, ...] = (),
) -> InMemoryDataset:
    """An MNIST-layout dataset: the four IDX_FILES (each gzipped or not) in `root`.

    Images come back as uint8 (N, 1, H, W), labels as int64 (N,); the sample counts and image
    size are read from the files, not assumed. subdirs: further folders under root to look in
    (e.g. torchvision's "FashionMNIST/raw"). hint: how to get the files, for error messages.
    """
    paths = find_idx_files(root, dataset_name, hint=hint, subdirs=subdirs)
    return read_idx_pair(paths, dataset_name, num_classes=num_classes, hint=hint)


"""A file cache of decoded datasets, so that the 2nd to 100th run of a sweep start in seconds.

One file per dataset, split rule, size and options: `<cache_dir>/<dataset>-<split>-<size>-<hash>.pt`
(the hash covers every loader option that changes the tensors, the resolved root included).
Inside, besides the tensors, is a fingerprint of the source files (their sizes and modification
times, or the list of files read); when it no longer matches, the file is rebuilt. Files are
written to a temporary name and renamed (asymbp.files.atomic_write), so that the runs of a sweep
never read half a file; an unreadable cache file is rebuilt with a warning, and a cache folder that
cannot be written (read-only, full disk) is skipped with a warning: never fatal.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from asymbp.data.base import InMemoryDataset
from asymbp.data.layout import DatasetWarning
from asymbp.files import atomic_write, remove_stale_temps

#: Bump when the decoding changes, so that older cache files are not reused.
CACHE_FORMAT = 1
TENSORS = ("train_images", "train_labels", "test_images", "test_labels")


def _digest(value) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def fingerprint(files: Iterable[str | os.PathLike] = (), index=None) -> str:
    """A digest of the files' paths, sizes and modification times, and of a JSON-able index
    (e.g. the list of image files and labels a split reads)."""
    stats = [(str(path), os.stat(path).st_size, os.stat(path).st_mtime_ns) for path in files]
    return _digest({"files": stats, "index": index})


@dataclass(frozen=True)
class CacheKey:
    """What a cache file holds. split and size are short labels for the file name ("official",
    "30pc-50pc-s0"; "32px3c"); options: every other loader option that changes the tensors;
    sources: the `fingerprint` of the files read."""

    dataset: str
    split: str
    size: str
    options: dict
    sources: str

    @property
    def filename(self) -> str:
        digest = _digest({"format": CACHE_FORMAT, "options": self.options})
        return f"{self.dataset}-{self.split}-{self.size}-{digest}.pt"


def load_cached(
    key: CacheKey, build: Callable[[], InMemoryDataset], cache_dir: str | os.PathLike | None
) -> InMemoryDataset:
    """The dataset from its cache file in cache_dir, or build() it and write that file.

    cache_dir None: no cache, always build().
    """
    if cache_dir is None:
        return build()
    path = Path(cache_dir).expanduser() / key.filename
    data = _read(path, key) if path.is_file() else None
    if data is None:
        data = build()
        _write(path, key, data)
    return data


def _read(path: Path, key: CacheKey) -> InMemoryDataset | None:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload["format"] != CACHE_FORMAT or payload["options"] != _digest(key.options):
            raise ValueError("it was written for other options")
        if payload["sources"] != key.sources:
            warnings.warn(
                f"{key.dataset}: the source files changed since {path} was written; rebuilding it",
                DatasetWarning,
                stacklevel=3,
            )
            return None
        return InMemoryDataset(
            name=payload["name"],
            **{name: payload[name] for name in TENSORS},
            num_classes=payload["num_classes"],
        )
    # Whatever is wrong with a cache file (truncated zip, unpickling error, missing key), the
    # remedy is the same: decode the dataset again.
    except Exception as error:
        warnings.warn(
            f"{key.dataset}: cache file {path} is unreadable ({type(error).__name__}: {error}); "
            "rebuilding it",
            DatasetWarning,
            stacklevel=3,
        )
        return None


def _compact(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor alone: torch.save of a view would also save the rest of its storage."""
    tensor = tensor.contiguous()
    return tensor if tensor.untyped_storage().nbytes() == tensor.nbytes else tensor.clone()


def _write(path: Path, key: CacheKey, data: InMemoryDataset) -> None:
    payload = {
        "format": CACHE_FORMAT,
        "options": _digest(key.options),
        "sources": key.sources,
        "name": data.name,
        "num_classes": data.num_classes,
        **{name: _compact(getattr(data, name)) for name in TENSORS},
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path.parent, path.name)
        # No fsync: a file cut short by a crash is detected on reading and rebuilt.
        atomic_write(path, lambda handle: torch.save(payload, handle), fsync=False)
    # A full disk surfaces from torch.save as a RuntimeError, from close() as an OSError: either
    # way the run goes on without the cache.
    except (OSError, RuntimeError) as error:
        warnings.warn(
            f"{key.dataset}: cannot write cache file {path} ({error}); continuing without it",
            DatasetWarning,
            stacklevel=3,
        )

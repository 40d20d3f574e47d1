"""From files to a cached in-memory dataset: arrays with an official split (`load_arrays`), and
image files split officially (`load_image_files`) or by a seeded rule (`load_by_rule`). Decoding
happens once; later loads read the cache file (asymbp.data.cache)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from asymbp.data.base import Expect, InMemoryDataset
from asymbp.data.cache import CacheKey, fingerprint, load_cached
from asymbp.data.images import check_image_options, conform, decode_images
from asymbp.data.layout import Layout
from asymbp.data.splits import SplitRule, keep_classes


def load_arrays(
    dataset: str,
    root: Path,
    sources: Iterable[Path],
    read: Callable[[], InMemoryDataset],
    *,
    image_size: int | None,
    channels: int | None,
    cache_dir: str | os.PathLike | None,
) -> InMemoryDataset:
    """A dataset stored as arrays with an official split (IDX, CIFAR, SVHN, STL-10): read() once,
    `conform`ed to image_size and channels (None: as stored), cached.

    sources: the files read() reads; the cache file is rebuilt when one of them changes.
    """
    check_image_options(dataset, image_size, channels, native_ok=True)
    size = f"{image_size or 'orig'}px{channels or 'orig'}c"
    options = {"root": str(root), "image_size": image_size, "channels": channels}
    key = CacheKey(dataset, "official", size, options, fingerprint(sources))

    def build() -> InMemoryDataset:
        data = read()
        return dataclasses.replace(
            data,
            train_images=conform(data.train_images, image_size, channels),
            test_images=conform(data.test_images, image_size, channels),
        )

    return load_cached(key, build, cache_dir)


@dataclass
class ImageFiles:
    """A dataset's image files and their labels, per split, before decoding."""

    classes: list[str]
    train_paths: list[Path]
    train_labels: list[int]
    test_paths: list[Path]
    test_labels: list[int]

    @classmethod
    def by_rule(
        cls, paths: list[Path], labels: list[int], classes: list[str], rule: SplitRule
    ) -> ImageFiles:
        """Split one list of files by a seeded, stratified rule."""
        train, test = rule.apply(torch.as_tensor(labels, dtype=torch.long))
        train, test = train.tolist(), test.tolist()
        return cls(
            classes,
            [paths[i] for i in train],
            [labels[i] for i in train],
            [paths[i] for i in test],
            [labels[i] for i in test],
        )


def load_image_files(
    layout: Layout,
    root: Path,
    files: ImageFiles,
    *,
    split: str,
    image_size: int,
    channels: int,
    fit: str,
    expect: Expect,
    cache_dir: str | os.PathLike | None,
) -> InMemoryDataset:
    """Decode the files of both splits once (or read them from the cache) into a dataset.

    split: a short name of the split for the cache file ("official", SplitRule.label). The cache
    file is keyed by the list of files and labels, so adding images makes a new one. expect: is
    checked against the classes and file counts before anything is decoded.
    """
    check_image_options(layout.dataset, image_size, channels, fit)
    expect.check(
        layout.dataset, root, len(files.classes), len(files.train_paths), len(files.test_paths)
    )
    for name, paths in (("training", files.train_paths), ("test", files.test_paths)):
        if not paths:
            raise layout.missing(root, f"no {name} images found in {root}")
    index = [[str(p) for p in files.train_paths], files.train_labels]
    index += [[str(p) for p in files.test_paths], files.test_labels]
    key = CacheKey(
        layout.dataset,
        split,
        f"{image_size}px{channels}c",
        {"root": str(root), "image_size": image_size, "channels": channels, "fit": fit,
         "files": fingerprint(index=index)},
        fingerprint(root / relative for relative in layout.expected),
    )  # fmt: skip

    def build() -> InMemoryDataset:
        paths = files.train_paths + files.test_paths
        images, kept = decode_images(layout, paths, image_size, channels, fit)
        labels = torch.tensor(files.train_labels + files.test_labels, dtype=torch.long)[kept]
        n_train = int(kept[: len(files.train_paths)].sum())
        return InMemoryDataset(
            name=layout.dataset,
            train_images=images[:n_train],
            train_labels=labels[:n_train],
            test_images=images[n_train:],
            test_labels=labels[n_train:],
            num_classes=len(files.classes),
        )

    return load_cached(key, build, cache_dir)


def load_by_rule(
    layout: Layout,
    root: Path,
    paths: list[Path],
    labels: list[int],
    classes: list[str],
    *,
    rule: SplitRule,
    min_images: int = 1,
    **options,
) -> InMemoryDataset:
    """A dataset without an official split: the classes with at least min_images images (N-way
    identification for the face sets), renumbered, then split by `rule`.

    options: load_image_files' image_size, channels, fit, expect and cache_dir (as made by
    `decoding`).
    """
    if min_images < 1:
        raise ValueError(f"{layout.dataset}: min_images must be >= 1, got {min_images}")
    index, labels, classes = keep_classes(
        torch.as_tensor(labels, dtype=torch.long), classes, min_images
    )
    files = ImageFiles.by_rule([paths[i] for i in index.tolist()], labels.tolist(), classes, rule)
    split = rule.label if min_images == 1 else f"min{min_images}-{rule.label}"
    return load_image_files(layout, root, files, split=split, **options)


def decoding(
    image_size: int, channels: int, fit: str, expect: Expect, cache: bool, cache_dir
) -> dict:
    """The keywords of load_image_files that come straight from a loader's config keys."""
    return {
        "image_size": image_size,
        "channels": channels,
        "fit": fit,
        "expect": expect,
        "cache_dir": cache_dir if cache else None,
    }

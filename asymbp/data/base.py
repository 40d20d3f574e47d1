"""The in-memory dataset every loader returns, its error type, the counts a correct copy yields
(Expect), and per-channel statistics."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Annotated

import torch

from asymbp.registry import PositiveInt, Range


class DatasetError(Exception):
    """A dataset's files are missing or corrupt.

    The message is one line: the dataset, the path looked at, the files expected and how to get
    them (line breaks in it are folded into spaces so logs and Hydra's error print stay one line).
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).splitlines()))


@dataclass(frozen=True)
class Expect:
    """What a correct copy of a dataset yields: the number of classes and, where the split is
    official, the number of training and test samples (None: not checked).

    Each dataset config states them in its `expect` block, from the dataset's sources; the
    loader compares them with what it found before any expensive step (decoding images,
    computing features), so that a copy in another layout (days read as classes, a flat folder
    read as one class, a missing part) stops with one line instead of training on wrong labels.
    """

    classes: Annotated[int, Range(ge=2)] | None = None
    train: PositiveInt | None = None
    test: PositiveInt | None = None

    def check(
        self,
        dataset: str,
        where: str | os.PathLike,
        classes: int,
        train: int,
        test: int,
        samples: str = "samples",
    ) -> None:
        """DatasetError naming the expected and found counts and where they were looked for.

        samples: what train and test count ("samples", "utterances")."""
        for key, what, found in (
            ("classes", "classes", classes),
            ("train", f"training {samples}", train),
            ("test", f"test {samples}", test),
        ):
            expected = getattr(self, key)
            if expected is not None and found != expected:
                raise DatasetError(
                    f"{dataset}: expected {expected} {what}, found {found} in {where}; the copy is "
                    "incomplete or laid out otherwise than dataset.root expects (see "
                    f"docs/datasets.md; dataset.expect.{key}=null accepts what is found)"
                )

    def check_data(self, data: InMemoryDataset, where: str | os.PathLike) -> InMemoryDataset:
        """check() on a loaded dataset: its classes are the distinct labels of both splits."""
        labels = torch.cat([data.train_labels, data.test_labels])
        self.check(
            data.name, where, int(labels.unique().numel()), len(data.train_labels),
            len(data.test_labels),
        )  # fmt: skip
        return data


@dataclass(repr=False)
class InMemoryDataset:
    """A whole dataset as tensors.

    Images are uint8 (N, C, H, W), scaled to [0, 1] by dividing by 255 when used; feature data
    (e.g. audio frames) are float32 (N, ...). Labels are int64 in [0, num_classes).
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            images = getattr(self, f"{split}_images")
            labels = getattr(self, f"{split}_labels")
            if images.dtype != torch.uint8 and not images.is_floating_point():
                raise TypeError(
                    f"{self.name}: {split} images must be uint8 or float, not {images.dtype}"
                )
            if labels.dtype != torch.int64 or labels.ndim != 1:
                raise TypeError(
                    f"{self.name}: {split} labels must be a 1-d int64 tensor, "
                    f"got {labels.dtype} of shape {tuple(labels.shape)}"
                )
            if images.ndim < 2 or images.shape[0] != labels.shape[0]:
                raise ValueError(
                    f"{self.name}: {split} has {images.shape[0] if images.ndim else 0} images "
                    f"of shape {tuple(images.shape)} but {labels.shape[0]} labels"
                )
            if labels.numel() and not 0 <= labels.min() <= labels.max() < self.num_classes:
                raise ValueError(
                    f"{self.name}: {split} labels span [{int(labels.min())}, {int(labels.max())}], "
                    f"outside [0, {self.num_classes})"
                )
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise ValueError(
                f"{self.name}: train samples {tuple(self.train_images.shape[1:])} and test samples "
                f"{tuple(self.test_images.shape[1:])} differ in shape"
            )

    @classmethod
    def from_pool(
        cls,
        name: str,
        samples: torch.Tensor,
        labels: torch.Tensor,
        train: torch.Tensor | slice,
        test: torch.Tensor | slice,
        num_classes: int,
    ) -> InMemoryDataset:
        """One pool of samples and labels, split by `train` and `test` (index tensors, e.g. from
        stratified_split, or slices): for data that comes as a single set."""
        return cls(
            name=name,
            train_images=samples[train],
            train_labels=labels[train],
            test_images=samples[test],
            test_labels=labels[test],
            num_classes=num_classes,
        )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one sample: (C, H, W) for images."""
        return tuple(self.train_images.shape[1:])

    def __repr__(self) -> str:
        return (
            f"InMemoryDataset(name={self.name!r}, train={len(self.train_labels)}, "
            f"test={len(self.test_labels)}, input_shape={self.input_shape}, "
            f"dtype={self.train_images.dtype}, num_classes={self.num_classes})"
        )


def channel_stats(
    images: torch.Tensor, chunk_size: int = 4096
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (population) std of (N, C, ...) data, as float32 tensors of shape (C,).

    uint8 images are measured in units of the [0, 1]-scaled pixel (value / 255). Accumulates in
    float64 chunk by chunk, so a large uint8 dataset is never copied whole into floats.
    """
    if images.ndim < 2 or images.shape[0] == 0:
        raise ValueError(f"expected non-empty (N, C, ...) data, got shape {tuple(images.shape)}")
    scale = 255.0 if images.dtype == torch.uint8 else 1.0
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk_size):
        chunk = images[start : start + chunk_size].cpu().to(torch.float64) / scale
        chunk = chunk.transpose(0, 1).reshape(channels, -1)
        total += chunk.sum(dim=1)
        total_sq += chunk.square().sum(dim=1)
    count = images.numel() // channels
    mean = total / count
    var = (total_sq / count - mean.square()).clamp(min=0.0)
    return mean.float(), var.sqrt().float()

"""The split helpers: a stratified held-out fraction (validation sets, test sets of datasets
without an official split), per-class counts, the seeded SplitRule of a dataset config, and
class selection (face sets); and Splits, a run's train / validation / test tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf

from asymbp.data.base import channel_stats
from asymbp.data.registry import load_dataset
from asymbp.engine import Normalizer


def stratified_split(
    labels: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split sample indices into (keep, heldout), holding out `fraction` of each class.

    The held-out count is round(fraction * N) overall, shared among the classes by largest
    remainder, and then clamped so that a class with at least two samples keeps at least one on
    each side (a class with one sample stays on the keep side). Both index tensors are sorted
    int64; the same labels and seed always give the same split.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    labels = torch.as_tensor(labels).reshape(-1).cpu()
    classes, counts = torch.unique(labels, sorted=True, return_counts=True)
    exact = counts.double() * fraction
    heldout_counts = exact.floor().long()
    shortfall = round(fraction * labels.numel()) - int(heldout_counts.sum())
    if shortfall > 0:
        # Stable sort: ties between equal remainders go to the smaller class label.
        order = torch.sort(exact - heldout_counts, descending=True, stable=True).indices
        heldout_counts[order[:shortfall]] += 1
    heldout_counts = torch.where(
        counts >= 2, heldout_counts.clamp(min=1).minimum(counts - 1), torch.zeros_like(counts)
    )

    generator = torch.Generator().manual_seed(seed)
    keep, heldout = [], []
    for cls, n_heldout in zip(classes.tolist(), heldout_counts.tolist(), strict=True):
        members = torch.nonzero(labels == cls).reshape(-1)
        members = members[torch.randperm(members.numel(), generator=generator)]
        heldout.append(members[:n_heldout])
        keep.append(members[n_heldout:])
    return torch.cat(keep).sort().values, torch.cat(heldout).sort().values


def per_class_split(
    labels: torch.Tensor, train_per_class: int, test_per_class: int | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) sample indices: each class shuffled with `seed`, its first train_per_class
    samples to train, the next test_per_class (None: all the rest) to test.

    A class of n <= train_per_class samples gives n - 1 to train and 1 to test (a class of one
    sample: train only), so every class is tested when it can be. Both index tensors are sorted.
    """
    labels = torch.as_tensor(labels).reshape(-1)
    generator = torch.Generator().manual_seed(seed)
    train, test = [torch.zeros(0, dtype=torch.long)], [torch.zeros(0, dtype=torch.long)]
    for cls in torch.unique(labels).tolist():
        members = torch.nonzero(labels == cls).reshape(-1)
        members = members[torch.randperm(members.numel(), generator=generator)]
        n_train = min(train_per_class, max(members.numel() - 1, 1))
        rest = members[n_train:]
        train.append(members[:n_train])
        test.append(rest if test_per_class is None else rest[:test_per_class])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


@dataclass(frozen=True)
class SplitRule:
    """A seeded, stratified train/test rule for a dataset without an official split: either
    counts per class (`per_class_split`) or a test fraction of every class (`stratified_split`).
    Give exactly one of train_per_class and test_fraction."""

    train_per_class: int | None = None
    test_per_class: int | None = None
    test_fraction: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.train_per_class is None) == (self.test_fraction is None):
            raise ValueError(
                "give exactly one of train_per_class and test_fraction, got "
                f"{self.train_per_class} and {self.test_fraction}"
            )
        if self.train_per_class is not None and self.train_per_class < 1:
            raise ValueError(f"train_per_class must be >= 1, got {self.train_per_class}")
        if self.test_per_class is not None and (
            self.train_per_class is None or self.test_per_class < 1
        ):
            raise ValueError(
                f"test_per_class ({self.test_per_class}) must be >= 1 and go with train_per_class"
            )

    @property
    def label(self) -> str:
        """A short name for cache files: '30+50pc-s0', '30+restpc-s0', 'test0.25-s0'."""
        if self.test_fraction is not None:
            return f"test{self.test_fraction:g}-s{self.seed}"
        test = "rest" if self.test_per_class is None else self.test_per_class
        return f"{self.train_per_class}+{test}pc-s{self.seed}"

    def apply(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(train, test) sample indices, sorted."""
        if self.test_fraction is not None:
            return stratified_split(labels, self.test_fraction, self.seed)
        return per_class_split(labels, self.train_per_class, self.test_per_class, self.seed)


def keep_classes(
    labels: torch.Tensor, classes: list[str], min_count: int
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The classes with at least min_count samples: (indices of their samples, their labels
    renumbered 0..K-1 in the original order, their names)."""
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    counts = torch.bincount(labels, minlength=len(classes))
    kept = torch.nonzero(counts >= min_count).reshape(-1)
    renumber = torch.full((len(classes),), -1, dtype=torch.long)
    renumber[kept] = torch.arange(kept.numel())
    index = torch.nonzero(renumber[labels] >= 0).reshape(-1)
    return index, renumber[labels[index]], [classes[i] for i in kept.tolist()]


class Splits:
    """Train / validation / test tensors on the device, and their normalizer."""

    def __init__(self, cfg: DictConfig, device: torch.device):
        options = {
            k: v
            for k, v in OmegaConf.to_container(cfg.dataset, resolve=True).items()
            if k != "name"
        }
        data = load_dataset(cfg.dataset.name, **options)
        self.num_classes = data.num_classes
        self.input_shape = data.input_shape
        images, labels = data.train_images, data.train_labels
        if cfg.val_fraction > 0:
            keep, held = stratified_split(labels, cfg.val_fraction, cfg.val_seed)
        else:
            keep, held = torch.arange(labels.numel()), torch.arange(0)
        if cfg.train_subset is not None and cfg.train_subset < keep.numel():
            fraction = cfg.train_subset / keep.numel()
            keep = keep[stratified_split(labels[keep], fraction, cfg.val_seed)[1]]
        mean, std = channel_stats(images[keep])  # statistics of the training split only
        self.normalize = Normalizer(mean, std, len(self.input_shape), device)
        self.train = (images[keep].to(device), labels[keep].to(device))
        self.val = (images[held].to(device), labels[held].to(device))
        self.test = (data.test_images.to(device), data.test_labels.to(device))
        self.description = (
            f"{data.name}: {keep.numel()} train, {held.numel()} validation, "
            f"{data.test_labels.numel()} test samples of shape {self.input_shape}, "
            f"{self.num_classes} classes"
        )

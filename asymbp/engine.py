"""Training and evaluation loops over in-memory tensors, batched by index permutation."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

#: How many training batches pass between two divergence checks (each check syncs the device).
DIVERGENCE_CHECK_EVERY = 25


class Normalizer:
    """Standardizes inputs per channel on the device, batch by batch: uint8 pixels are first scaled
    to [0, 1] (the units of `channel_stats`), float features are taken as they are."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, sample_ndim: int, device):
        shape = (1, -1) + (1,) * (sample_ndim - 1)
        self.mean = mean.to(device, torch.float32).view(shape)
        self.std = std.to(device, torch.float32).clamp_min(1e-8).view(shape)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # A copy either way: the in-place steps below must never touch the stored data.
        scaled = x.float().div_(255.0) if x.dtype == torch.uint8 else x.to(torch.float32, copy=True)
        return scaled.sub_(self.mean).div_(self.std)


@dataclass
class EpochResult:
    loss: float
    accuracy: float
    diverged: bool


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    normalize,
    batch_size: int,
    generator: torch.Generator,
    divergence_loss: float,
    progress: bool = False,
    description: str = "",
) -> EpochResult:
    """One pass over the training tensors in a random order; stops early when the loss diverges."""
    model.train()
    n = labels.shape[0]
    order = torch.randperm(n, generator=generator).to(labels.device)
    # A last batch of one sample is dropped: BatchNorm cannot normalize a single sample.
    starts = range(0, n - 1 if n % batch_size == 1 and n > 1 else n, batch_size)
    loss_sum = torch.zeros((), device=labels.device, dtype=torch.float64)
    correct = torch.zeros((), device=labels.device, dtype=torch.int64)
    seen = 0
    bar = tqdm(starts, desc=description, leave=False, disable=not progress, unit="batch")
    for step, start in enumerate(bar):
        index = order[start : start + batch_size]
        x, y = normalize(images[index]), labels[index]
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * y.shape[0]
        correct += (logits.detach().argmax(1) == y).sum()
        seen += y.shape[0]
        last = step == len(starts) - 1
        if (step + 1) % DIVERGENCE_CHECK_EVERY == 0 or last:
            mean_loss = loss_sum.item() / seen
            if progress:
                bar.set_postfix(loss=f"{mean_loss:.4f}")
            if not math.isfinite(mean_loss) or mean_loss > divergence_loss:
                return EpochResult(mean_loss, correct.item() / seen, diverged=True)
    return EpochResult(loss_sum.item() / seen, correct.item() / seen, diverged=False)


@torch.no_grad()
def evaluate(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, normalize, batch_size: int
) -> float:
    """Accuracy (fraction correct) of the model in eval mode."""
    if labels.numel() == 0:
        return math.nan
    model.eval()
    correct = torch.zeros((), device=labels.device, dtype=torch.int64)
    for start in range(0, labels.shape[0], batch_size):
        logits = model(normalize(images[start : start + batch_size]))
        correct += (logits.argmax(1) == labels[start : start + batch_size]).sum()
    return correct.item() / labels.shape[0]

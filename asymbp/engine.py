"""Training and evaluation loops over in-memory tensors, batched by index permutation, in the
run's arithmetic (`precision`)."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

#: How many training batches pass between two divergence checks (each check syncs the device).
DIVERGENCE_CHECK_EVERY = 25


@dataclass(frozen=True)
class Precision:
    """The arithmetic of a run's forward and backward passes (the `precision` key).

    autocast: the dtype of torch.autocast around the forward pass and the loss (None: no
        autocast). The backward pass follows it: autograd's own ops compute each gradient in its
        forward op's dtype, and asymbp's Functions multiply by V in the dtype of the error they
        receive (asymbp.layers), so the feedback product is in bf16 exactly where W's is.
    tf32: whether float32 matrix products and convolutions may use TensorFloat-32 on NVIDIA GPUs
        (10-bit mantissa inputs); off unless the user asks, since it changes results.
    """

    autocast: torch.dtype | None
    tf32: bool

    def context(self, device: torch.device | str):
        """The autocast context for `device` (nothing for fp32 and tf32)."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(torch.device(device).type, dtype=self.autocast)


#: The values of the `precision` key. fp32: IEEE float32 everywhere (TF32 off, cuDNN's
#: convolutions included, whose PyTorch default is on); tf32: float32 storage with TF32 matrix
#: units on NVIDIA GPUs; bf16: torch.autocast to bfloat16 (on CUDA and on the CPU), weights,
#: optimizer state and the loss's reduction in float32, no loss scaling (bf16 has float32's range).
PRECISIONS = {
    "fp32": Precision(autocast=None, tf32=False),
    "tf32": Precision(autocast=None, tf32=True),
    "bf16": Precision(autocast=torch.bfloat16, tf32=False),
}


def set_tf32(allowed: bool) -> None:
    """Allow or forbid TF32 in CUDA matrix products and cuDNN convolutions (process-wide)."""
    torch.backends.cuda.matmul.allow_tf32 = allowed
    torch.backends.cudnn.allow_tf32 = allowed


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
    precision: str = "fp32",
) -> EpochResult:
    """One pass over the training tensors in a random order; stops early when the loss diverges.
    The forward pass and the loss run in `precision` (PRECISIONS), the backward pass follows."""
    autocast = PRECISIONS[precision].context(labels.device)
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
        with autocast:
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
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    normalize,
    batch_size: int,
    precision: str = "fp32",
) -> float:
    """Accuracy (fraction correct) of the model in eval mode, in the arithmetic it trains in."""
    if labels.numel() == 0:
        return math.nan
    model.eval()
    correct = torch.zeros((), device=labels.device, dtype=torch.int64)
    for start in range(0, labels.shape[0], batch_size):
        with PRECISIONS[precision].context(labels.device):
            logits = model(normalize(images[start : start + batch_size]))
        correct += (logits.argmax(1) == labels[start : start + batch_size]).sum()
    return correct.item() / labels.shape[0]

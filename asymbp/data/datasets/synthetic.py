"""A generated, learnable image dataset of any shape: class prototypes plus Gaussian noise."""

from __future__ import annotations

from typing import Annotated

import numpy as np
import torch

from asymbp.data.base import Expect, InMemoryDataset
from asymbp.data.registry import register_dataset
from asymbp.registry import NonNegative, PositiveInt, Range, Seed


@register_dataset("synthetic")
def load_synthetic(
    num_classes: Annotated[int, Range(ge=2)],
    channels: PositiveInt,
    size: PositiveInt,
    train_size: PositiveInt,
    test_size: PositiveInt,
    noise: NonNegative,
    seed: Seed,
    expect: Expect | None,
) -> InMemoryDataset:
    """Each class has a fixed random prototype image with pixels uniform in [0, 1]; a sample is
    its class's prototype plus N(0, noise^2) per pixel, clipped to [0, 1] and quantized to uint8.

    Classes are balanced (sample i has class i mod num_classes, then shuffled). With the defaults
    a nearest-class-mean classifier scores about 99%: a model that cannot learn it is broken.
    The same arguments always give the same data; the test set does not depend on train_size.
    """
    # Independent streams, so that changing one split's size leaves the other split unchanged.
    prototype_seq, train_seq, test_seq = np.random.SeedSequence(seed).spawn(3)
    prototypes = np.random.default_rng(prototype_seq).random((num_classes, channels, size, size))

    def draw(count: int, seq: np.random.SeedSequence) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng(seq)
        labels = rng.permutation(np.arange(count) % num_classes)
        values = prototypes[labels] + noise * rng.standard_normal((count, channels, size, size))
        pixels = np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
        return torch.from_numpy(pixels), torch.from_numpy(labels).long()

    train_images, train_labels = draw(train_size, train_seq)
    test_images, test_labels = draw(test_size, test_seq)
    data = InMemoryDataset(
        name="synthetic",
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        num_classes=num_classes,
    )
    return expect.check_data(data, "the generated data")

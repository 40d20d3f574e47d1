"""scikit-learn's bundled 8x8 handwritten digits: the embedded default dataset, no download."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits as sklearn_load_digits

from asymbp.data.base import Expect, InMemoryDataset
from asymbp.data.registry import register_dataset
from asymbp.data.splits import stratified_split
from asymbp.registry import OpenFraction, Seed


@register_dataset("digits")
def load_digits(
    test_fraction: OpenFraction, split_seed: Seed, expect: Expect | None
) -> InMemoryDataset:
    """The 1797 UCI optical-recognition digits (8x8, grey values 0..16), 10 classes.

    There is no official split: `test_fraction` of each class is held out as the test set by
    `stratified_split(labels, test_fraction, split_seed)`. Grey values are rescaled to uint8
    0..255 (round(v * 255 / 16)) so they share the image convention of the other datasets.
    """
    bunch = sklearn_load_digits()
    values = torch.from_numpy(bunch.images).double()
    images = (values * (255.0 / 16.0)).round().to(torch.uint8).unsqueeze(1)
    labels = torch.from_numpy(bunch.target).long()
    train_idx, test_idx = stratified_split(labels, test_fraction, split_seed)
    data = InMemoryDataset.from_pool("digits", images, labels, train_idx, test_idx, num_classes=10)
    return expect.check_data(data, "scikit-learn's load_digits")

"""The UCI Wine data (scikit-learn's bundled copy: 178 wines, 13 chemical measurements,
3 cultivars with 59, 71 and 48 samples; sklearn.datasets.load_wine), as an asymbp dataset."""

import torch
from sklearn.datasets import load_wine

from asymbp.data import InMemoryDataset, register_dataset, stratified_split


@register_dataset("wine")  # selected by `name: wine` in conf/dataset/wine.yaml
def wine(test_fraction: float = 0.3, split_seed: int = 0) -> InMemoryDataset:
    """Feature vectors (float32, shape (13,)); asymbp standardizes each feature with the
    training split's mean and std. No official split: a seeded, stratified test split."""
    bunch = load_wine()
    features = torch.from_numpy(bunch.data).float()
    labels = torch.from_numpy(bunch.target).long()
    train, test = stratified_split(labels, test_fraction, split_seed)
    return InMemoryDataset.from_pool("wine", features, labels, train, test, num_classes=3)

"""Datasets as in-memory tensors: a registry of loaders, one module per on-disk format.

`load_dataset(name, **options)` returns an `InMemoryDataset`; importing this package registers
every loader in `DATASETS`: the paper's 15 datasets, Fashion-MNIST, digits and synthetic.
"""

# Imported for their registrations.
from asymbp.config import PAPER_DATASETS
from asymbp.data import (  # noqa: F401
    digits,
    flowers17,
    idx,
    image_folders,
    synthetic,
    timit,
    torchvision_arrays,
    torchvision_images,
)
from asymbp.data.base import DatasetError, InMemoryDataset, channel_stats, stratified_split
from asymbp.data.idx import DEBIAN_FASHION_MNIST
from asymbp.data.layout import DatasetWarning
from asymbp.data.registry import DATASETS, load_dataset, register_dataset

__all__ = [
    "DATASETS",
    "DEBIAN_FASHION_MNIST",
    "PAPER_DATASETS",
    "DatasetError",
    "DatasetWarning",
    "InMemoryDataset",
    "channel_stats",
    "load_dataset",
    "register_dataset",
    "stratified_split",
]

"""Datasets as in-memory tensors: a registry of loaders, one module per on-disk format.

`load_dataset(name, **options)` returns an `InMemoryDataset`; importing this package registers
every loader in `DATASETS`.
"""

# digits, idx, synthetic: imported for their registrations.
from asymbp.data import digits, idx, synthetic  # noqa: F401
from asymbp.data.base import DatasetError, InMemoryDataset, channel_stats, stratified_split
from asymbp.data.registry import DATASETS, load_dataset, register_dataset

__all__ = [
    "DATASETS",
    "DatasetError",
    "InMemoryDataset",
    "channel_stats",
    "load_dataset",
    "register_dataset",
    "stratified_split",
]

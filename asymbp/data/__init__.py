"""Datasets as in-memory tensors.

`load_dataset(name, **options)` returns an `InMemoryDataset`. Each dataset is defined once, in
asymbp/data/datasets/<name>.py (cifar.py: CIFAR-10 and -100, caltech.py: Caltech-101 and -256),
by a loader registered with @register_dataset("name"), whose keywords are the keys of
conf/dataset/<name>.yaml; an image set's loader takes the keys they share (image_size, channels,
fit, expect, cache, cache_dir) as one `Decoding` (decode.py). The file formats they read (IDX,
SPHERE, MATLAB, image files) are in asymbp/data/formats/, the shared steps (decoding once,
caching, splitting) in pipeline.py, cache.py and splits.py.
"""

from asymbp.config import PAPER_DATASETS
from asymbp.data import datasets  # noqa: F401  (registers every dataset)
from asymbp.data.base import DatasetError, Expect, InMemoryDataset, channel_stats
from asymbp.data.datasets.fashion_mnist import DEBIAN_FASHION_MNIST
from asymbp.data.decode import Decoding
from asymbp.data.layout import DatasetWarning
from asymbp.data.registry import DATASETS, load_dataset, register_dataset
from asymbp.data.splits import Splits, stratified_split

__all__ = [
    "DATASETS",
    "DEBIAN_FASHION_MNIST",
    "PAPER_DATASETS",
    "Splits",
    "DatasetError",
    "DatasetWarning",
    "Decoding",
    "Expect",
    "InMemoryDataset",
    "channel_stats",
    "load_dataset",
    "register_dataset",
    "stratified_split",
]

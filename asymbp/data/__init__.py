"""Datasets as in-memory tensors.

`load_dataset(name, **options)` returns an `InMemoryDataset`. Each dataset is defined once, in
asymbp/data/datasets/<name>.py (cifar.py: CIFAR-10 and -100, caltech.py: Caltech-101 and -256),
by a loader registered with @register_dataset("name"), whose keywords are the keys of
conf/dataset/<name>.yaml. The file formats they read (IDX, SPHERE, MATLAB, image files) are in
asymbp/data/formats/, the shared steps (decoding once, caching, splitting) in pipeline.py,
cache.py and splits.py.
"""

from asymbp.data import datasets  # noqa: F401  (registers every dataset)
from asymbp.data.base import DatasetError, Expect, InMemoryDataset, channel_stats
from asymbp.data.datasets.fashion_mnist import DEBIAN_FASHION_MNIST
from asymbp.data.layout import DatasetWarning
from asymbp.data.registry import DATASETS, load_dataset, register_dataset
from asymbp.data.splits import stratified_split

#: The paper's 15 datasets, in the order of its table (Liao, Leibo & Poggio 2016).
PAPER_DATASETS = (
    "mnist", "cifar10", "cifar100", "svhn", "stl10", "caltech101", "caltech256", "icubworld",
    "flowers17", "flowers102", "pubfig83", "sufrw", "lfw", "scene67", "timit",
)  # fmt: skip

__all__ = [
    "DATASETS",
    "DEBIAN_FASHION_MNIST",
    "PAPER_DATASETS",
    "DatasetError",
    "DatasetWarning",
    "Expect",
    "InMemoryDataset",
    "channel_stats",
    "load_dataset",
    "register_dataset",
    "stratified_split",
]

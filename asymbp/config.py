"""Where the shipped configs live, the names of their groups, and the error a bad value raises."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
#: The conf/ folder, as an absolute path (Hydra reads a relative one as a Python package).
#: An installed wheel carries it as asymbp/conf (setup.py maps the repository's top-level conf/
#: there); a source checkout, editable install included, reads the repository's conf/ itself.
CONFIG_DIR = _PACKAGE / "conf" if (_PACKAGE / "conf").is_dir() else _PACKAGE.parent / "conf"
#: The config groups that choose a run's parts, in the order of runs.csv's columns and run names.
GROUPS = ("dataset", "model", "feedback", "norm", "optimizer")
#: The paper's 15 datasets (their `dataset` options) in the order of its table (Liao, Leibo &
#: Poggio 2016; the order after STL-10 is reconstructed, see docs). Here rather than in
#: asymbp.data, which re-exports it, so that the report can order columns without importing
#: every loader.
PAPER_DATASETS = (
    "mnist", "cifar10", "cifar100", "svhn", "stl10", "caltech101", "caltech256", "icubworld",
    "flowers17", "flowers102", "pubfig83", "sufrw", "lfw", "scene67", "timit",
)  # fmt: skip


class ConfigError(ValueError):
    """A config value out of its range; the message names the key and the allowed values."""


def out_of_range(key: str, value, allowed: str) -> ConfigError:
    """The error of a value outside what its key allows: `key=value is out of range: allowed`."""
    return ConfigError(f"{key}={value!r} is out of range: {allowed}")

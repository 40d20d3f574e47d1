"""Run directories: named by the config's identity, written atomically, finished by `DONE`."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

#: Keys that choose where or how fast a run happens, not what it computes: left out of its identity.
NON_IDENTITY_KEYS = (
    "device",
    "threads",
    "deterministic",
    "data_root",
    "output_root",
    "exp_name",
    "force",
    "progress",
    "eval_batch_size",
    "dataset.root",
    "dataset.cache",
    "dataset.cache_dir",
    "dataset.download",
    "logger",
    "plugins",
)
DONE = "DONE"
CONFIG = "config.yaml"
HISTORY = "history.csv"
METRICS = "metrics.json"
CHECKPOINT = "checkpoint.pt"
LOG = "train.log"
FAILED = "FAILED"
TENSORBOARD = "tensorboard"  # folder of TensorBoard event files (logger=tensorboard)
MLFLOW_RUN = "mlflow_run_id"  # the MLflow run this run directory logs to (logger=mlflow)


def identity(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config without the keys of NON_IDENTITY_KEYS."""
    data = OmegaConf.to_container(cfg, resolve=True)
    data.pop("hydra", None)
    for dotted in NON_IDENTITY_KEYS:
        *parents, leaf = dotted.split(".")
        node = data
        for key in parents:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    return data


def run_id(cfg: DictConfig) -> str:
    """Readable name plus a hash of the identity: digits_paper_cnn_sc0.5_bn_bm_sgd_s0_1a2b3c4d."""
    digest = hashlib.sha256(json.dumps(identity(cfg), sort_keys=True).encode()).hexdigest()[:8]
    feedback = cfg.feedback.name
    if feedback == "sc":
        feedback += f"{cfg.feedback.concordance:g}"
    parts = [cfg.dataset.name, cfg.model.name, feedback, cfg.norm.name, cfg.optimizer.name]
    return "_".join(parts + [f"s{cfg.seed}", digest])


def run_directory(cfg: DictConfig) -> Path:
    return Path(cfg.output_root) / str(cfg.exp_name) / run_id(cfg)


def is_done(run_dir: Path) -> bool:
    return (run_dir / DONE).exists()


def _atomic(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    _atomic(path, lambda handle: handle.write(text.encode()))


def write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def save_checkpoint(path: Path, state: dict) -> None:
    _atomic(path, lambda handle: torch.save(state, handle))


def load_checkpoint(path: Path, device: torch.device) -> dict | None:
    """The checkpoint, or None when there is none or it cannot be read (the run starts over)."""
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as error:
        warnings.warn(f"unreadable checkpoint {path} ({error}); starting over", stacklevel=2)
        return None


def clear(run_dir: Path) -> None:
    """Remove a run's files before a forced rerun (DONE first, so a crash leaves it unfinished)."""
    for name in (DONE, METRICS, HISTORY, CHECKPOINT, LOG, CONFIG):
        (run_dir / name).unlink(missing_ok=True)

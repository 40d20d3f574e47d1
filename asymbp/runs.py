"""Run directories: named by the config's identity, one writer at a time, finished by `DONE`.

A run directory holds the files named below. `DONE` is written last; `FAILED` (first line: the
one-line error) marks a sweep job that could not start; `.lock` is the writer's lock (fcntl.flock,
released by the kernel when its process ends, however it ends).
"""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import importlib.metadata
import io
import json
import math
import os
import re
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from asymbp.feedback import RULES
from asymbp.files import atomic_write

#: Keys that choose where or how fast a run happens, not what it computes: left out of its identity.
#: `threads` and `deterministic` can change the last bits of the results; a run keeps the values
#: it started with when it resumes (see asymbp.train), so they need not split run directories.
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
    "attack",  # attacks read a finished run's model; they never change what it computed
    "dry_run",
    "sweep_report",
)
#: Keys added after runs were made, left out of the identity while they keep their default, so
#: that finished runs keep their directories.
OMITTED_AT_DEFAULT = {
    "output_layer": None, "precision": "fp32", "feedback.modules": None, "init_from": None
}  # fmt: skip
#: At most this many characters of a run name describe feedback.modules (the hash has the rest).
MODULES_LABEL_MAX = 40
DONE = "DONE"
FAILED = "FAILED"
CONFIG = "config.yaml"
HISTORY = "history.csv"
METRICS = "metrics.json"
CHECKPOINT = "checkpoint.pt"
LOG = "train.log"
TENSORBOARD = "tensorboard"  # folder of TensorBoard event files (logger=tensorboard)
MLFLOW_RUN = "mlflow_run_id"  # the MLflow run this run directory logs to (logger=mlflow)
LOCK = ".lock"
#: The most bytes one path component may have on common filesystems (ext4, xfs, btrfs, NFS).
NAME_MAX = 255


class RunError(Exception):
    """A run directory that cannot be used (unwritable, full disk, ...); the message is one line."""


class RunBusy(RunError):
    """Another live process holds the run directory's lock."""


def _canonical(value):
    """Numbers by value, not spelling: 1.0 and 1 hash alike (bools stay bools)."""
    if isinstance(value, dict):
        return {key: _canonical(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def result_metrics(history: list[dict], diverged: bool) -> dict:
    """The fields of metrics.json that follow from a run's history rows (the last row is the
    diverged epoch when `diverged`); the best epoch is the one of highest validation accuracy
    (NaN, no validation split, never wins). Training and the report's example both use this."""
    last = history[-1]
    best = max(history, key=lambda row: -1.0 if math.isnan(row["val_acc"]) else row["val_acc"])
    return {
        "test_acc": last["test_acc"],
        "test_error": 1.0 - last["test_acc"],
        "val_acc": last["val_acc"],
        "best_val_acc": best["val_acc"],
        "best_val_epoch": best["epoch"],
        "test_acc_at_best_val": best["test_acc"],
        "train_loss": last["train_loss"],
        "epochs_completed": len(history) - (1 if diverged else 0),
        "diverged": diverged,
    }


def identity(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config without the keys of NON_IDENTITY_KEYS (nor those of OMITTED_AT_DEFAULT
    at their default), numbers in canonical form."""
    data = OmegaConf.to_container(cfg, resolve=True)
    data.pop("hydra", None)
    for dotted in NON_IDENTITY_KEYS:
        node, leaf = _parent(data, dotted)
        node.pop(leaf, None)
    for dotted, default in OMITTED_AT_DEFAULT.items():
        node, leaf = _parent(data, dotted)
        if leaf in node and node[leaf] == default:
            del node[leaf]
    if isinstance(data.get("init_from"), str):  # a run directory: by its name, the same anywhere
        data["init_from"] = Path(data["init_from"]).name
    return _canonical(data)


def _parent(data: dict, dotted: str) -> tuple[dict, str]:
    """The mapping that holds a dotted key's leaf (an empty one where a parent is missing)."""
    *parents, leaf = dotted.split(".")
    node = data
    for key in parents:
        node = node.get(key, {}) if isinstance(node, dict) else {}
    return (node if isinstance(node, dict) else {}), leaf


def _name_value(value) -> str:
    return (
        f"{value:g}"
        if isinstance(value, int | float) and not isinstance(value, bool)
        else str(value)
    )


def modules_label(entries) -> str:
    """feedback.modules in a run name: `+<rule>@<pattern's letters and digits>` per entry, e.g.
    `+bp@attn` for [{match: "*attn*", name: bp}] ("" for none)."""
    if not entries:
        return ""
    label = "".join(
        f"+{entry['name']}@{re.sub('[^A-Za-z0-9]', '', str(entry['match'])) or 'all'}"
        for entry in entries
    )
    return label[:MODULES_LABEL_MAX]


def _init_label(init_from) -> str:
    """init_from in a run name: `-from-<the source's rule>`, `-from-run` for a directory."""
    if init_from is None:
        return ""
    if isinstance(init_from, str):
        return "-from-run"
    return f"-from-{init_from.get('feedback', 'same')}"


def run_id(cfg: DictConfig) -> str:
    """Readable name plus a hash of the identity: digits_paper_cnn_sc0.5_bn_bm_sgd_s0_1a2b3c4d.

    The feedback part carries the options the rule lists in its `name_options`, then the
    per-module rules (`usf+bp@attn`) and the run it starts from (`usf-from-bp`)."""
    digest = hashlib.sha256(json.dumps(identity(cfg), sort_keys=True).encode()).hexdigest()[:8]
    rule = RULES.get(cfg.feedback.name)
    options = rule.name_options if rule is not None else ()
    feedback = cfg.feedback.name + "-".join(_name_value(cfg.feedback[key]) for key in options)
    feedback += modules_label(cfg.feedback.get("modules")) + _init_label(cfg.get("init_from"))
    parts = [cfg.dataset.name, cfg.model.name, feedback, cfg.norm.name, cfg.optimizer.name]
    return "_".join(parts + [f"s{cfg.seed}", digest])


def run_directory(cfg: DictConfig) -> Path:
    return Path(cfg.output_root) / str(cfg.exp_name) / run_id(cfg)


def check_writable(run_dir: Path) -> None:
    """RunError unless `run_dir` exists as a writable folder or can be created: checked before any
    data is read. Nothing is created."""
    existing = run_dir
    while not existing.exists():
        if existing.is_symlink():  # a dangling link cannot be made into a folder
            raise RunError(
                f"cannot create the run directory {run_dir}: {existing} is a broken link"
            )
        existing = existing.parent
    if not existing.is_dir():
        raise RunError(f"cannot create the run directory {run_dir}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunError(f"cannot write the run directory {run_dir}: {existing} is not writable")


def is_done(run_dir: Path) -> bool:
    return (run_dir / DONE).exists()


def finished_metrics(run_dir: Path) -> dict | None:
    """metrics.json of a finished run; None when the run is not finished. A run with DONE but no
    readable metrics.json counts as unfinished (with a warning): it resumes from its checkpoint."""
    if not is_done(run_dir):
        return None
    try:
        metrics = json.loads((run_dir / METRICS).read_text())
        if not isinstance(metrics, dict) or "test_acc" not in metrics:
            raise ValueError("it holds no test_acc")
        return metrics
    except (OSError, ValueError) as error:
        warnings.warn(
            f"{run_dir} has DONE but no readable {METRICS} ({error}); finishing it from its "
            "checkpoint",
            stacklevel=2,
        )
        return None


def status(run_dir: Path) -> str:
    """What running this config again would do: `finished` (DONE: skipped), `failed` (FAILED:
    tried again), `resumable` (a checkpoint: resumed from it) or `new`."""
    if is_done(run_dir):
        return "finished"
    if (run_dir / FAILED).exists():
        return "failed"
    return "resumable" if (run_dir / CHECKPOINT).is_file() else "new"


def finished_model(run_dir: Path) -> dict:
    """metrics.json of a finished run that still holds its checkpoint (its final model), which
    fine-tuning and attacks read; RunError naming what is missing and the fix."""
    metrics = finished_metrics(run_dir)
    if metrics is None:
        raise RunError(
            f"{run_dir} is not a finished run (no {DONE}): finish it first (run its command again)"
        )
    if not (run_dir / CHECKPOINT).is_file():
        raise RunError(
            f"{run_dir} has no {CHECKPOINT} (it was removed): its model is gone; run it again "
            "with force=true"
        )
    return metrics


def write_error(path: Path, error: OSError) -> RunError:
    """The one-line RunError for an OSError writing `path` in a run directory."""
    reason = os.strerror(error.errno) if error.errno else str(error)
    return RunError(f"cannot write {path.name} in the run directory {path.parent}: {reason}")


def write_bytes(path: Path, data: bytes) -> None:
    """Atomic write; an OSError (full disk, read-only folder) becomes a one-line RunError."""
    try:
        atomic_write(path, lambda handle: handle.write(data))
    except OSError as error:
        raise write_error(path, error) from error


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def save_checkpoint(path: Path, state: dict) -> None:
    # Serialized in memory first: torch.save on a full disk raises an unhelpful RuntimeError.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes(path, buffer.getvalue())


#: What a checkpoint must hold to resume a run.
CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "order", "rng", "history", "wall_seconds")


def load_checkpoint(path: Path) -> dict | None:
    """The checkpoint, or None when there is none or it is not one of ours (the run starts over,
    with a warning). Loaded onto the CPU: the random generators' states must stay there, and
    load_state_dict copies the model's and the optimizer's tensors to their parameters' device."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"it holds a {type(state).__name__}, not a dict")
        missing = [key for key in CHECKPOINT_KEYS if key not in state]
        if missing:
            raise ValueError(f"it lacks {', '.join(missing)}")
        if not isinstance(state["history"], list):
            raise ValueError("its history is not a list")
        return state
    # torch.load of a file that is not a checkpoint raises anything from KeyError to
    # UnpicklingError; the remedy is the same.
    except Exception as error:
        warnings.warn(f"unreadable checkpoint {path} ({error}); starting over", stacklevel=2)
        return None


@dataclass
class RunState:
    """What a run carries from epoch to epoch, and what its checkpoint holds: the model, the
    optimizer, the scheduler, the data order, the history so far, the wall time spent and how
    the run started (`execution`: device, threads, versions)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    order: torch.Generator
    history: list[dict] = field(default_factory=list)
    wall_seconds: float = 0.0
    execution: dict = field(default_factory=dict)

    def checkpoint(self) -> dict:
        """The checkpoint of the state after its last epoch (with the global RNG state)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "order": self.order.get_state(),
            "rng": rng_state(),
            "history": self.history,
            "wall_seconds": self.wall_seconds,
            "execution": self.execution,
        }

    def restore(self, checkpoint: dict) -> None:
        """Load a checkpoint into this state (RuntimeError, ValueError, KeyError or TypeError
        when it does not fit this model)."""
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.order.set_state(checkpoint["order"])
        set_rng_state(checkpoint["rng"])
        self.history, self.wall_seconds = checkpoint["history"], checkpoint["wall_seconds"]
        self.execution = checkpoint.get("execution", {})


def rng_state() -> dict:
    state = {"torch": torch.random.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.random.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def execution(deterministic: bool, device: torch.device) -> dict:
    """What a checkpoint records of how and by what code the run was computed."""
    return {
        "device": device.type,
        "threads": torch.get_num_threads(),
        "deterministic": bool(deterministic),
        "torch_version": str(torch.__version__),
        **code_version(),
    }


def clear(run_dir: Path) -> None:
    """Remove a run's results before a forced rerun (DONE first: a crash leaves it unfinished)."""
    for name in (DONE, FAILED, METRICS, HISTORY, CHECKPOINT, LOG, CONFIG):
        (run_dir / name).unlink(missing_ok=True)


def write_failed(run_dir: Path, line: str, config_yaml: str | None) -> bool:
    """Record a run that could not start: FAILED (its first line is `line`) and config.yaml.

    Nothing is written into a finished run or one another process is training; returns whether
    the record was written."""
    if is_done(run_dir):
        return False
    try:
        with RunLock(run_dir):
            if config_yaml is not None:
                write_text(run_dir / CONFIG, config_yaml)
            write_text(run_dir / FAILED, line.rstrip("\n") + "\n")
        return True
    except RunError:
        return False


class RunLock:
    """`with RunLock(run_dir):` holds the run directory's lock (creating the folder), or raises
    RunBusy naming the process that holds it. The kernel releases it when the process ends."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK
        self.fd: int | None = None

    def __enter__(self):
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            raise write_error(self.path, error) from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunBusy(
                    f"{self.path.parent} is being written by another process ({holder}); "
                    "skipped: run it again once that one has ended"
                ) from None
            raise write_error(self.path, error) from error
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc_info):
        os.close(self.fd)  # releases the flock
        self.fd = None


@functools.cache
def code_version() -> dict[str, str | None]:
    """asymbp's version and, when it runs from a git checkout, the commit (`-dirty` when tracked
    files differ from it)."""
    try:
        version = importlib.metadata.version("asymbp")
    except importlib.metadata.PackageNotFoundError:
        version = None
    source = Path(__file__).resolve().parent.parent
    commit = None
    try:
        git = ["git", "-C", str(source)]
        top = subprocess.run(
            [*git, "rev-parse", "--show-toplevel"], capture_output=True, text=True, timeout=10
        )
        if top.returncode == 0 and Path(top.stdout.strip()).resolve() == source:
            commit = (
                subprocess.run(
                    [*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
                ).stdout.strip()
                or None
            )
            dirty = subprocess.run(
                [*git, "status", "--porcelain", "--untracked-files=no"],
                capture_output=True, text=True, timeout=10,
            ).stdout.strip()  # fmt: skip
            if commit and dirty:
                commit += "-dirty"
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"asymbp_version": version, "git_commit": commit}

"""Run directories -> frames: one row per run (status, group choices, metrics, config) and every
run's history in long form. Nothing here raises on a bad run: it gets status `broken` and a reason.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from asymbp import runs as files
from asymbp.config import GROUPS

LEAD_COLUMNS = ("run", "status", "reason", *GROUPS, "seed")
STATUSES = ("done", "diverged", "incomplete", "broken")

# metrics.json fields kept under their own name in runs.csv; any other field is stored as
# `metrics.<name>` (metrics.json's `device`, the device used, would clash with the config's).
METRIC_COLUMNS = (
    "test_error",
    "test_acc",
    "val_acc",
    "train_loss",
    "best_val_acc",
    "best_val_epoch",
    "test_acc_at_best_val",
    "epochs_completed",
    "diverged",
    "wall_seconds",
    "torch_version",
)
METRIC_PREFIX = "metrics."
HISTORY_COLUMNS = ["run", "epoch", "metric", "layer", "value"]


def find_run_dirs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Every run directory under `paths` (at any depth), once each, sorted by path."""
    found: dict[Path, Path] = {}
    for top in paths:
        for run_dir in _walk(Path(top)):
            found.setdefault(run_dir.resolve(), run_dir)
    return sorted(found.values(), key=lambda path: path.as_posix())


def _walk(top: Path) -> Iterable[Path]:
    for dirpath, dirnames, filenames in os.walk(top):
        if files.CONFIG in filenames:
            dirnames.clear()
            yield Path(dirpath)
        else:
            dirnames[:] = sorted(name for name in dirnames if not name.startswith("."))


@dataclass
class RunRecord:
    """What one run directory holds: its runs.csv fields, split by origin, and its history."""

    lead: dict
    metrics: dict
    config: dict
    history: pd.DataFrame | None


def read_run(path: Path) -> RunRecord:
    """Read one run directory; unreadable files give status `broken`, never an exception."""
    lead = {"run": path.as_posix()}
    config, problem = _load(path / files.CONFIG, _parse_config)
    if problem:
        return RunRecord({**lead, "status": "broken", "reason": problem}, {}, {}, None)
    metrics, metrics_problem = _load(path / files.METRICS, _parse_metrics)
    history, history_problem = _load(path / files.HISTORY, _parse_history)
    metrics = metrics or {}
    status, reason = _status(path, metrics, [metrics_problem, history_problem])
    lead |= {"status": status, "reason": reason}
    lead |= {group: _group_choice(config, metrics, group) for group in GROUPS}
    lead["seed"] = config.get("seed", metrics.get("seed"))
    return RunRecord(lead, _metric_fields(metrics), flatten(config), history)


def _load(path: Path, parse: Callable[[Path], object]) -> tuple[object, str]:
    """(parsed content, "") or (None, why the file could not be read)."""
    if not path.is_file():
        return None, f"{path.name} missing"
    try:
        return parse(path), ""
    except Exception as exc:  # any parse failure marks the run broken instead of stopping us
        detail = str(exc).strip().splitlines()[:1]
        return None, f"{path.name} unreadable ({': '.join([type(exc).__name__, *detail])[:120]})"


def _mapping(data: object) -> dict:
    if not isinstance(data, dict):
        raise TypeError("not a mapping")
    return data


def _parse_config(path: Path) -> dict:
    return _mapping(yaml.safe_load(path.read_text(encoding="utf-8")))


def _parse_metrics(path: Path) -> dict:
    return _mapping(json.loads(path.read_text(encoding="utf-8")))


def _parse_history(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path).apply(pd.to_numeric, errors="coerce")
    if "epoch" not in frame.columns:
        raise ValueError("no epoch column")
    frame = frame.dropna(subset=["epoch"])
    return frame.astype({"epoch": int})


def _status(path: Path, metrics: dict, problems: list[str]) -> tuple[str, str]:
    if not (path / files.DONE).exists():
        return "incomplete", f"no {files.DONE}"
    problems = [problem for problem in problems if problem]
    if problems:
        return "broken", "; ".join(problems)
    if metrics.get("diverged") is True:
        return "diverged", ""
    return "done", ""


def _group_choice(config: dict, metrics: dict, group: str) -> object:
    choice = config.get(group)
    if isinstance(choice, dict):
        choice = choice.get("name")
    return metrics.get(group) if choice is None else choice


def _metric_fields(metrics: dict) -> dict:
    skip = {*GROUPS, "seed"}
    return {
        key if key in METRIC_COLUMNS else f"{METRIC_PREFIX}{key}": value
        for key, value in metrics.items()
        if key not in skip
    }


def flatten(mapping: dict, prefix: str = "") -> dict:
    """Nested config -> {dotted key: value}; lists (and empty dicts) become JSON strings."""
    flat = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat |= flatten(value, f"{name}.")
        elif isinstance(value, (list, dict)):
            flat[name] = json.dumps(value, sort_keys=True)
        else:
            flat[name] = value
    return flat


def collect(paths: Iterable[str | os.PathLike]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, history): one row per run directory found, and all histories in long form."""
    records = [read_run(path) for path in find_run_dirs(paths)]
    return _runs_frame(records), _history_frame(records)


def collect_runs(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """One row per run directory found under `paths`, as in runs.csv."""
    return collect(paths)[0]


def _runs_frame(records: list[RunRecord]) -> pd.DataFrame:
    rows = [{**record.config, **record.metrics, **record.lead} for record in records]
    metric_names = {key for record in records for key in record.metrics}
    config_names = {key for record in records for key in record.config} - set(LEAD_COLUMNS)
    known = {name: rank for rank, name in enumerate(METRIC_COLUMNS)}
    metric_order = sorted(metric_names, key=lambda name: (known.get(name, len(known)), name))
    columns = [*LEAD_COLUMNS, *metric_order, *sorted(config_names)]
    return pd.DataFrame(rows, columns=columns)


def config_columns(frame: pd.DataFrame) -> list[str]:
    """The columns of a runs frame that come from config.yaml (dotted keys)."""
    derived = {*LEAD_COLUMNS, *METRIC_COLUMNS}
    return [c for c in frame.columns if c not in derived and not c.startswith(METRIC_PREFIX)]


def _history_frame(records: list[RunRecord]) -> pd.DataFrame:
    parts = [_tidy(r.lead["run"], r.history) for r in records if r.history is not None]
    parts = [part for part in parts if not part.empty]
    if not parts:
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    return pd.concat(parts, ignore_index=True)


def _tidy(run: str, history: pd.DataFrame) -> pd.DataFrame:
    """Wide per-epoch table -> rows (run, epoch, metric, layer, value), columns in file order."""
    long = history.melt(id_vars="epoch", var_name="column", value_name="value")
    parts = long["column"].str.partition("/")
    long = long.assign(run=run, metric=parts[0], layer=parts[2])
    return long.sort_values("epoch", kind="stable")[HISTORY_COLUMNS]

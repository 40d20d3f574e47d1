"""Run directories -> frames: one row per run (status, group choices, metrics, config) and every
run's history in long form. Nothing here raises on a bad run: it gets status `broken` and a reason.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from asymbp import runs
from asymbp.config import GROUPS

LEAD_COLUMNS = ("run", "status", "reason", *GROUPS, "seed")
#: done: finished (DONE) and consistent; diverged: finished with `diverged: true`; incomplete: no
#: DONE yet; failed: stopped by a config or dataset error (FAILED); broken: files unreadable or
#: inconsistent; duplicate: another run of the same condition and seed is counted instead.
STATUSES = ("done", "diverged", "incomplete", "failed", "broken", "duplicate")
#: The highest test accuracy over a run's epochs, from its history (not in metrics.json).
BEST_TEST = "best_test_acc"

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
    "best_test_acc",
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
        if runs.CONFIG in filenames or runs.FAILED in filenames:
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
    """Read one run directory; unreadable or inconsistent files give status `broken` with the
    reason, never an exception."""
    lead = {"run": path.as_posix()}
    config, config_problem = _load(path / runs.CONFIG, _parse_config)
    done = (path / runs.DONE).exists()
    if not done and (path / runs.FAILED).exists():
        return _record(lead, "failed", _failure(path), config or {}, {}, None)
    if config_problem:
        return RunRecord({**lead, "status": "broken", "reason": config_problem}, {}, {}, None)
    metrics, metrics_problem = _load(path / runs.METRICS, _parse_metrics)
    history, history_problem = _load(path / runs.HISTORY, _parse_history)
    frame = None if history is None else history.frame
    if not done:
        return _record(lead, "incomplete", f"no {runs.DONE}", config, metrics or {}, frame)
    problems = [metrics_problem, history_problem]
    if not any(problems):
        problems = check_finished(config, metrics, history)
    problems = [problem for problem in problems if problem]
    if problems:
        return _record(lead, "broken", "; ".join(problems), config, metrics or {}, frame)
    status = "diverged" if metrics["diverged"] else "done"
    return _record(lead, status, "", config, metrics, frame)


def _record(
    lead: dict, status: str, reason: str, config: dict, metrics: dict, history: pd.DataFrame | None
) -> RunRecord:
    lead = {**lead, "status": status, "reason": reason}
    lead |= {group: _group_choice(config, metrics, group) for group in GROUPS}
    lead["seed"] = config.get("seed", metrics.get("seed"))
    fields = _metric_fields(metrics)
    if status in ("done", "diverged") and history is not None and "test_acc" in history:
        # biotorch's choice: the best epoch on the test set (--metric best_test; optimistic)
        fields[BEST_TEST] = float(history["test_acc"].max())
    return RunRecord(lead, fields, flatten(config), history)


def _failure(path: Path) -> str:
    """The first line of FAILED: the one-line error that stopped the run."""
    try:
        lines = (path / runs.FAILED).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        return f"{runs.FAILED} unreadable ({type(exc).__name__})"
    return lines[0].strip() if lines and lines[0].strip() else f"{runs.FAILED} (no reason given)"


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


@dataclass
class History:
    """history.csv's complete rows, and whether its last line was cut short (and left out)."""

    frame: pd.DataFrame
    truncated: bool


def _parse_history(path: Path) -> History:
    text = path.read_text(encoding="utf-8")
    truncated = not text.endswith("\n")
    if truncated:  # a partial row would be read as wrong numbers: keep the complete lines only
        text = text[: text.rfind("\n") + 1]
    frame = pd.read_csv(io.StringIO(text)).apply(pd.to_numeric, errors="coerce")
    if "epoch" not in frame.columns:
        raise ValueError("no epoch column")
    frame = frame.dropna(subset=["epoch"])
    return History(frame.astype({"epoch": int}), truncated)


#: metrics.json fields that every finished run has and the report uses.
REQUIRED_METRICS = (
    "test_acc",
    "test_error",
    "best_val_acc",
    "test_acc_at_best_val",
    "epochs_completed",
    "diverged",
)
ACCURACIES = ("test_acc", "val_acc", "best_val_acc", "test_acc_at_best_val")
HISTORY_ACCURACIES = ("train_acc", "val_acc", "test_acc")
#: How far two copies of one accuracy (metrics.json, history.csv) may differ: float rounding.
ROUNDING = 1e-9


def check_finished(config: dict, metrics: dict, history: History) -> list[str]:
    """Why a finished run's files cannot all be true (empty when they agree): metrics.json
    complete and in range, history.csv whole and as long as the epochs metrics.json counts, and
    config.yaml naming the same choices, seed and epochs."""
    missing = [key for key in REQUIRED_METRICS if key not in metrics]
    if missing:
        return [f"{runs.METRICS} lacks {', '.join(missing)}"]
    problems = [*_metric_problems(metrics), *_history_problems(history)]
    if problems:
        return problems
    return _agreement_problems(config, metrics, history.frame)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _metric_problems(metrics: dict) -> list[str]:
    problems = []
    for key in ACCURACIES:
        value = metrics.get(key)
        if value is not None and not (_is_number(value) and 0 <= value <= 1):
            problems.append(f"{runs.METRICS} {key} {value!r} is not an accuracy in [0, 1]")
    if not isinstance(metrics["diverged"], bool):
        problems.append(f"{runs.METRICS} diverged {metrics['diverged']!r} is not true/false")
    completed = metrics["epochs_completed"]
    if not (isinstance(completed, int) and not isinstance(completed, bool) and completed >= 0):
        problems.append(f"{runs.METRICS} epochs_completed {completed!r} is not a count")
    test_acc, test_error = metrics["test_acc"], metrics["test_error"]
    if not problems and _is_number(test_acc) and not _is_number(test_error):
        problems.append(f"{runs.METRICS} test_error {test_error!r} is not a number")
    elif not problems and _is_number(test_acc) and abs(test_error - (1 - test_acc)) > ROUNDING:
        problems.append(f"{runs.METRICS} test_error {test_error} is not 1 - test_acc {test_acc}")
    return problems


def _history_problems(history: History) -> list[str]:
    frame = history.frame
    if history.truncated:
        return [f"{runs.HISTORY} ends in a cut-short line (after epoch {len(frame)})"]
    if frame["epoch"].tolist() != list(range(1, len(frame) + 1)):
        return [f"{runs.HISTORY} epochs are not 1, 2, ... {len(frame)}"]
    for column in (c for c in HISTORY_ACCURACIES if c in frame):
        outside = frame[(frame[column] < 0) | (frame[column] > 1)]
        if not outside.empty:
            row = outside.iloc[0]
            return [
                f"{runs.HISTORY} {column} {row[column]:g} at epoch {int(row['epoch'])} is not "
                "an accuracy in [0, 1]"
            ]
    return []


def _agreement_problems(config: dict, metrics: dict, frame: pd.DataFrame) -> list[str]:
    problems = []
    diverged, completed = metrics["diverged"], metrics["epochs_completed"]
    if len(frame) != completed + diverged:
        extra = " plus the diverged one" if diverged else ""
        problems.append(
            f"{runs.HISTORY} has {len(frame)} epochs, {runs.METRICS} says {completed}{extra}"
        )
    elif len(frame) and _is_number(metrics["test_acc"]):
        last = frame["test_acc"].iloc[-1] if "test_acc" in frame else math.nan
        if not math.isnan(last) and abs(last - metrics["test_acc"]) > ROUNDING:
            problems.append(
                f"{runs.METRICS} test_acc {metrics['test_acc']} is not the last epoch's "
                f"({last:g}) in {runs.HISTORY}"
            )
    for key in (*GROUPS, "seed"):
        said = _group_choice(config, {}, key) if key in GROUPS else config.get(key)
        ran = metrics.get(key)
        if said is not None and ran is not None and said != ran:
            problems.append(f"{runs.CONFIG} says {key}={said}, {runs.METRICS} says {ran}")
    epochs = config.get("epochs")
    if _is_number(epochs) and not diverged and completed != epochs:
        problems.append(
            f"{runs.CONFIG} says epochs={epochs}, {runs.METRICS} says {completed} completed "
            "without diverging"
        )
    return problems


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

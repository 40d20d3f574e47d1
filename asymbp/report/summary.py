"""Runs -> conditions: which columns make a condition, each run's test error, and the summary
(mean, sample std and counts by status per condition)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from asymbp.config import GROUPS
from asymbp.report.labels import sort_rows, with_rule
from asymbp.report.read import config_columns
from asymbp.runs import NON_IDENTITY_KEYS

# --metric choice -> the accuracy column of runs.csv whose complement is the reported error.
METRICS = {"final": "test_acc", "best_val": "test_acc_at_best_val"}
# --metric choice -> the validation accuracy of runs.csv at that same epoch (for --select).
VAL_METRICS = {"final": "val_acc", "best_val": "best_val_acc"}
#: Column added by --select: which value of the selected keys won, e.g. `optimizer.lr=0.01`.
SELECTED = "selected"
SUMMARY_STATS = (
    "metric",
    "test_error_mean",
    "test_error_std",
    "n",
    "n_diverged",
    "n_incomplete",
    "n_broken",
)


def condition_columns(runs: pd.DataFrame, ignore: Sequence[str] = NON_IDENTITY_KEYS) -> list[str]:
    """What identifies an experimental condition: group choices and config, minus seed, minus
    `ignore`, minus the groups' `name` keys (already in the group columns). By default `ignore`
    is the keys that asymbp.runs leaves out of a run's identity (where and how fast it ran), so
    a condition is a run's identity without its seed."""
    skip = {*ignore, "seed", *(f"{group}.name" for group in GROUPS)}
    return [*GROUPS, *(c for c in config_columns(runs) if c not in skip)]


def run_errors(runs: pd.DataFrame, metric: str = "final") -> pd.Series:
    """Each run's test error (fraction) under `metric`; NaN unless the run is `done`."""
    column = METRICS[metric]
    accuracy = pd.to_numeric(runs[column], errors="coerce") if column in runs else np.nan
    errors = pd.Series(1.0 - accuracy, index=runs.index, dtype=float)
    return errors.where(runs["status"] == "done")


def summarize(
    runs: pd.DataFrame, metric: str = "final", ignore: Sequence[str] = NON_IDENTITY_KEYS
) -> pd.DataFrame:
    """One row per condition: test error mean and sample std (ddof=1) over its `done` runs, n,
    and how many of its runs diverged, are incomplete or broken. Runs without a readable config
    belong to no condition and are left out."""
    keys = condition_columns(runs, ignore)
    runs = runs.dropna(subset=keys, how="all")
    if runs.empty:
        return pd.DataFrame(columns=[*keys, *SUMMARY_STATS])
    stats = pd.DataFrame({"error": run_errors(runs, metric)})
    for status in ("diverged", "incomplete", "broken"):
        stats[status] = runs["status"].eq(status)
    grouped = stats.groupby([runs[key] for key in keys], dropna=False, sort=False)
    summary = grouped.agg(
        test_error_mean=("error", "mean"),
        test_error_std=("error", "std"),
        n=("error", "count"),
        n_diverged=("diverged", "sum"),
        n_incomplete=("incomplete", "sum"),
        n_broken=("broken", "sum"),
    ).reset_index()
    summary.insert(len(keys), "metric", metric)
    return sort_rows(summary, [*with_rule(GROUPS, keys), *keys])


def summary_keys(summary: pd.DataFrame) -> list[str]:
    return [c for c in summary.columns if c not in (*SUMMARY_STATS, SELECTED)]

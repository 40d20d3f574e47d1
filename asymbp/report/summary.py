"""Runs -> conditions: which columns make a condition, each run's test error, and the summary
(mean, sample std and counts by status per condition)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from asymbp.config import GROUPS
from asymbp.report.labels import sort_rows, with_rule
from asymbp.report.read import BEST_TEST, STATUSES, config_columns
from asymbp.runs import NON_IDENTITY_KEYS

# --metric choice -> the accuracy column of runs.csv whose complement is the reported error.
#: best_test is biotorch's choice, the best epoch on the test set itself: optimistic, for a
#: like-for-like comparison with their cells only.
METRICS = {"final": "test_acc", "best_val": "test_acc_at_best_val", "best_test": BEST_TEST}
# --metric choice -> the validation accuracy of runs.csv at that same epoch (for --select); under
# best_test the hyperparameters are still chosen on validation, at its best epoch.
VAL_METRICS = {"final": "val_acc", "best_val": "best_val_acc", "best_test": "best_val_acc"}
#: Column added by --select: which value of the selected keys won, e.g. `optimizer.lr=0.01`.
SELECTED = "selected"
#: Statuses counted in the summary besides `done` (none of them in the mean): n_<status>.
COUNTED = tuple(status for status in STATUSES if status != "done")
SUMMARY_STATS = ("metric", "test_error_mean", "test_error_std", "n", *(f"n_{s}" for s in COUNTED))
#: Which run of a (condition, seed) found more than once is counted: the first status here.
PREFERENCE = tuple(status for status in STATUSES if status != "duplicate")


def condition_columns(runs: pd.DataFrame, ignore: Sequence[str] = NON_IDENTITY_KEYS) -> list[str]:
    """What identifies an experimental condition: group choices and config, minus seed, minus
    `ignore`, minus the groups' `name` keys (already in the group columns). By default `ignore`
    is the keys that asymbp.runs leaves out of a run's identity (where and how fast it ran), so
    a condition is a run's identity without its seed."""
    skip = {*ignore, "seed", *(f"{group}.name" for group in GROUPS)}
    below = tuple(f"{key}." for key in ignore)  # an ignored key's sub-keys too: logger.name, ...
    keys = [c for c in config_columns(runs) if c not in skip and not c.startswith(below)]
    return [*GROUPS, *keys]


def run_errors(runs: pd.DataFrame, metric: str = "final") -> pd.Series:
    """Each run's test error (fraction) under `metric`; NaN unless the run is `done`."""
    column = METRICS[metric]
    accuracy = pd.to_numeric(runs[column], errors="coerce") if column in runs else np.nan
    errors = pd.Series(1.0 - accuracy, index=runs.index, dtype=float)
    return errors.where(runs["status"] == "done")


def mark_duplicates(runs: pd.DataFrame, ignore: Sequence[str] = NON_IDENTITY_KEYS) -> pd.DataFrame:
    """`runs` where every run of a (condition, seed) that another run already has (say, two
    folders holding the same sweep) gets status `duplicate`, so it is counted once. The run kept
    is the finished one if any (done, then diverged, incomplete, failed, broken), then the first
    by path. Numbers are compared by value: `scale: 1` and `scale: 1.0` are the same condition."""
    keys = [*condition_columns(runs, ignore), "seed"]
    candidates = runs.dropna(subset=keys[:-1], how="all")  # runs with a readable config
    if candidates.empty:
        return runs
    rank = candidates["status"].map({s: i for i, s in enumerate(PREFERENCE)})
    ordered = candidates.assign(rank=rank.fillna(len(PREFERENCE)))
    ordered = ordered.sort_values(["rank", "run"], kind="stable")
    counted = ordered.groupby(keys, dropna=False, sort=False)["run"].transform("first")
    repeated = ordered.index[ordered["run"] != counted]
    if repeated.empty:
        return runs
    runs = runs.copy()
    runs.loc[repeated, "status"] = "duplicate"
    runs.loc[repeated, "reason"] = "same condition and seed as " + counted[repeated]
    return runs


def summarize(
    runs: pd.DataFrame, metric: str = "final", ignore: Sequence[str] = NON_IDENTITY_KEYS
) -> pd.DataFrame:
    """One row per condition: test error mean and sample std (ddof=1) over its `done` runs, n,
    and how many of its runs have each other status (n_diverged, ...; none of them is in the
    mean). Runs without a readable config belong to no condition and are left out."""
    keys = condition_columns(runs, ignore)
    runs = runs.dropna(subset=keys, how="all")
    if runs.empty:
        return pd.DataFrame(columns=[*keys, *SUMMARY_STATS])
    stats = pd.DataFrame({"error": run_errors(runs, metric)})
    for status in COUNTED:
        stats[status] = runs["status"].eq(status)
    grouped = stats.groupby([runs[key] for key in keys], dropna=False, sort=False)
    summary = grouped.agg(
        test_error_mean=("error", "mean"),
        test_error_std=("error", "std"),
        n=("error", "count"),
        **{f"n_{status}": (status, "sum") for status in COUNTED},
    ).reset_index()
    summary.insert(len(keys), "metric", metric)
    return sort_rows(summary, [*with_rule(GROUPS, keys), *keys])


def runs_without_validation(runs: pd.DataFrame) -> pd.DataFrame:
    """The `done` runs that held out no validation split (val_fraction 0, or no best validation
    accuracy): their "best validation epoch" is epoch 1 by default, not a model selection."""
    done = runs[runs["status"] == "done"]
    if "best_val_acc" not in done:
        return done
    lacking = pd.to_numeric(done["best_val_acc"], errors="coerce").isna()
    if "val_fraction" in done:
        lacking |= pd.to_numeric(done["val_fraction"], errors="coerce").eq(0)
    return done[lacking]


def summary_keys(summary: pd.DataFrame) -> list[str]:
    return [c for c in summary.columns if c not in (*SUMMARY_STATS, SELECTED)]

"""`--select KEY`: hyperparameters chosen on the validation split. For each condition (its identity
minus the selected keys), the value of the keys whose runs have the best mean validation accuracy
wins, a diverged run counting as 0 (as the Optuna objective counts it: a rate at which one seed of
three diverges loses to one at which none does), and the condition's test error is reported at
that value only; incomplete, failed and broken runs take no part. The validation
accuracy is read at the epoch the test error is read (`--metric`): the last epoch for `final`,
the best validation epoch for `best_val`. The test set never takes part in the choice. The
`selected` column names only the keys that took more than one value in the condition (a key swept
for other conditions, such as `optimizer.bm_lr` for runs without Batch Manhattan, is not chosen)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from asymbp.report.labels import sorted_positions, value_label
from asymbp.report.summary import SELECTED, VAL_METRICS, condition_columns, summarize
from asymbp.runs import NON_IDENTITY_KEYS

NO_WINNER = "none (no finished run)"


def validation_accuracy(runs: pd.DataFrame, metric: str) -> pd.Series:
    """Each run's validation accuracy at the epoch `metric` reads: 0 for a diverged run, NaN
    for one neither done nor diverged."""
    column = VAL_METRICS[metric]
    values = pd.to_numeric(runs[column], errors="coerce") if column in runs else np.nan
    values = pd.Series(values, index=runs.index, dtype=float).where(runs["status"] == "done")
    return values.mask(runs["status"] == "diverged", 0.0)


def matching(frame: pd.DataFrame, row: dict, columns: Sequence[str]) -> np.ndarray:
    """Rows of `frame` whose `columns` equal `row`'s (a missing value matches a missing value)."""
    same = np.ones(len(frame), dtype=bool)
    for column in columns:
        value = row[column]
        values = frame[column]
        same &= values.isna().to_numpy() if pd.isna(value) else (values == value).to_numpy()
    return same


def winners(runs: pd.DataFrame, metric: str, ignore: Sequence[str], keys: Sequence[str]) -> list:
    """Index labels of the runs at each condition's winning value of `keys` (ties: the value
    first in sort order). A condition whose values have no validation accuracy keeps its first
    value, so it still shows in the summary (with no finished run)."""
    condition = condition_columns(runs, (*ignore, *keys))
    frame = runs[[*condition, *keys]].assign(_val=validation_accuracy(runs, metric))
    kept: list = []
    for _, group in frame.groupby(condition, dropna=False, sort=False):
        by_value = group.groupby(list(keys), dropna=False, sort=False)
        means = by_value["_val"].mean().reset_index()
        score = (-means["_val"]).fillna(np.inf).to_numpy()  # best mean first, missing last
        best_at = min(sorted_positions(means, list(keys)), key=score.__getitem__)
        best = means.iloc[best_at][list(keys)].to_dict()
        kept.extend(group.index[matching(group, best, keys)])
    return kept


def select_summary(
    runs: pd.DataFrame,
    metric: str,
    keys: Sequence[str],
    ignore: Sequence[str] = NON_IDENTITY_KEYS,
) -> pd.DataFrame:
    """The summary with each condition at its winning value of `keys`, and a `selected` column
    saying which value won. ValueError (one line) for an unknown key or no validation split."""
    unknown = [key for key in keys if key not in runs.columns]
    if unknown:
        raise ValueError(f"--select: unknown config key(s) {unknown} (dotted keys of runs.csv)")
    if validation_accuracy(runs, metric)[runs["status"] == "done"].notna().sum() == 0:
        raise ValueError(
            f"--select needs a validation split, but no finished run has {VAL_METRICS[metric]}: "
            "train with val_fraction > 0"
        )
    runs = runs.dropna(subset=condition_columns(runs, ignore), how="all")
    chosen = runs.loc[sorted(winners(runs, metric, ignore, keys))]
    summary = summarize(chosen, metric, ignore)
    condition = condition_columns(runs, (*ignore, *keys))
    labels = []
    for row in summary.to_dict("records"):
        candidates = runs[matching(runs, row, condition)]
        swept = [key for key in keys if candidates[key].nunique(dropna=False) > 1]
        label = ", ".join(f"{key}={value_label(key, row[key])}" for key in swept)
        labels.append(label if row["n"] else NO_WINNER)
    summary[SELECTED] = labels
    return summary

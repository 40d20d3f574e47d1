"""Order and labels shared by tables, figures and claim verdicts: the paper's order of rules,
stabilizations and datasets, and how a rule, a stabilization or a config value is written."""

from __future__ import annotations

import json
import numbers
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from asymbp.config import PAPER_DATASETS
from asymbp.feedback import RULES

#: How each stabilization condition (the `norm` group) is written in tables, figures and verdicts.
NORM_LABELS = {"none": "none", "bn": "BN", "bm": "BM", "bn_bm": "BN+BM"}
ORDERS = {
    "feedback": tuple(RULES),
    "norm": tuple(NORM_LABELS),
    "dataset": PAPER_DATASETS + ("fashion_mnist", "digits", "synthetic"),
}
#: Table headers of the label columns that are not named after their key.
HEADERS = {"feedback": "rule", "norm": "stabilization"}
CONCORDANCE = "feedback.concordance"
#: The per-module rules, shown as `pattern: rule; ...`.
MODULES = "feedback.modules"
#: --metric choice -> how tables and figures say which test error they show.
METRIC_TEXT = {
    "final": "at the last epoch",
    "best_val": "at the epoch of best validation accuracy",
    "best_test": "at the epoch of best test accuracy (biotorch's choice: optimistic)",
}


def missing(value: object) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def _value_key(column: str, value: object) -> tuple:
    """Sort key: the paper's order for known columns, numbers before text, missing last."""
    order = ORDERS.get(column, ())
    rank = order.index(value) if value in order else len(order)
    if missing(value):
        return (rank, 2, 0.0, "")
    if isinstance(value, (numbers.Number, np.generic)) and not isinstance(value, str):
        return (rank, 0, float(value), "")
    return (rank, 1, 0.0, str(value))


def sorted_positions(frame: pd.DataFrame, columns: Sequence[str]) -> list[int]:
    """Row positions of `frame` in the paper's order of `columns` (rules, stabilizations, ...)."""
    values = frame[list(columns)].itertuples(index=False)
    keys = [tuple(_value_key(c, v) for c, v in zip(columns, row, strict=True)) for row in values]
    return sorted(range(len(frame)), key=keys.__getitem__)


def sort_rows(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    return frame.iloc[sorted_positions(frame, columns)].reset_index(drop=True)


def rule_label(feedback: object, concordance: object = None) -> str:
    """`sc` is split by its concordance p, e.g. `sc (p=0.5)`; other rules are their key."""
    if missing(feedback):
        return ""
    if feedback == "sc" and not missing(concordance):
        return f"sc (p={float(concordance):g})"
    return str(feedback)


def value_label(key: str, value: object) -> str:
    if missing(value):
        return ""
    if key == "norm":
        return NORM_LABELS.get(value, str(value))
    if key == MODULES:  # runs.csv holds it as JSON: [{"match": "*attn*", "name": "bp"}]
        entries = json.loads(value) if isinstance(value, str) else value
        return "; ".join(f"{e['match']}: {e['name']}" for e in entries)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def row_label(key: str, row: Mapping) -> str:
    if key == "feedback":
        return rule_label(row["feedback"], row.get(CONCORDANCE))
    return value_label(key, row[key])


def with_rule(keys: Sequence[str], columns: Iterable[str]) -> list[str]:
    """`keys` with `feedback.concordance` right after `feedback`, when the frame has it."""
    absorbed = CONCORDANCE in columns and CONCORDANCE not in keys
    extra = [CONCORDANCE] if absorbed else []
    return [k for key in keys for k in ([key, *extra] if key == "feedback" else [key])]


def varying_keys(frame: pd.DataFrame, fixed: Sequence[str], candidates: Sequence[str]) -> list[str]:
    """The `candidates` that take more than one value among rows sharing the `fixed` values and
    the values of the candidates chosen before them, in order: a key that follows from one
    already chosen (`dataset.image_size` from `dataset`) is left out."""
    chosen: list[str] = []
    if frame.empty:
        return chosen
    for candidate in (c for c in candidates if c not in fixed):
        keys = [*fixed, *chosen]
        if keys:
            grouped = frame.groupby(keys, dropna=False, sort=False)[candidate]
            varies = bool((grouped.nunique(dropna=False) > 1).any())
        else:
            varies = frame[candidate].nunique(dropna=False) > 1
        if varies:
            chosen.append(candidate)
    return chosen

"""Published numbers side by side: our conditions against the anchors of anchors.csv.

anchors.csv (package data, one row per published cell) holds biotorch's benchmarks (Sanfiz & Akrout
2021, jsalbert/biotorch HEAD 74fad0d Benchmarks.md: MNIST/Fashion-MNIST LeNet, CIFAR-10 LeNet,
ResNet-20, ResNet-56 with SGD and Adam, ImageNet ResNet-18), Akrout et al. 2019's published MLP
runs (makrout/Deep-Learning-without-Weight-Transport, experiments/*/results.json: BP, FA, KP and WM
on MNIST and CIFAR-10) and the paper's five headline cells, whose condition is not known. An anchor
matches a condition of the summary when its dataset, model, rule (the `feedback` choice),
stabilization (the `norm` choice as labels.NORM_LABELS writes it) and optimizer agree; an empty
anchor field matches anything. Each match gives a row: our test error mean and std over seeds, the
published error, the difference (ours minus published, in points) and a verdict; an anchor that
matches no condition is listed as `not run`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from asymbp.report.labels import NORM_LABELS, missing, value_label, varying_keys
from asymbp.report.summary import SELECTED, summary_keys
from asymbp.report.tables import format_cell

ANCHORS_FILE = Path(__file__).with_name("anchors.csv")
ANCHOR_COLUMNS = (
    "source", "dataset", "model", "rule", "stabilization", "optimizer", "epochs", "metric",
    "value", "selection", "notes",
)  # fmt: skip
#: anchor column -> summary column it is matched against (the stabilization through NORM_LABELS).
MATCHED = {
    "dataset": "dataset",
    "model": "model",
    "rule": "feedback",
    "stabilization": "norm",
    "optimizer": "optimizer",
}
#: anchors.csv `metric` -> how the published value becomes a test error in percent.
PUBLISHED_ERROR = {"test_error": lambda value: value, "test_accuracy": lambda value: 100 - value}
#: Default tolerance of a verdict, in percentage points of test error (--tolerance).
ANCHOR_TOLERANCE = 0.5
WITHIN, BETTER, WORSE, NOT_RUN, NO_RUN_FINISHED = (
    "within tolerance", "better", "worse", "not run", "no finished run",
)  # fmt: skip
RESULT_COLUMNS = (
    "metric", "source", "dataset", "model", "rule", "stabilization", "optimizer", "condition",
    SELECTED, "ours_mean", "ours_std", "n", "published", "difference", "tolerance", "verdict",
    "published_epochs", "published_selection",
)  # fmt: skip


def load_anchors(path: Path = ANCHORS_FILE) -> pd.DataFrame:
    """anchors.csv as strings (empty = any) with `value` as a float; ValueError (one line) when
    a column is missing, a metric unknown or a value not a number."""
    anchors = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [column for column in ANCHOR_COLUMNS if column not in anchors.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    unknown = sorted(set(anchors["metric"]) - set(PUBLISHED_ERROR))
    if unknown:
        raise ValueError(f"{path}: unknown metric(s) {unknown}; use {sorted(PUBLISHED_ERROR)}")
    values = pd.to_numeric(anchors["value"], errors="coerce")
    if values.isna().any():
        rows = list(anchors.index[values.isna()])
        raise ValueError(f"{path}: value not a number in row(s) {rows}")
    return anchors.assign(value=values)


def published_error(anchor: dict) -> float:
    return float(PUBLISHED_ERROR[anchor["metric"]](anchor["value"]))


def verdict(difference: float, tolerance: float) -> str:
    """`within tolerance` when |ours - published| <= tolerance, else `better` (lower error) or
    `worse`; the difference is in points of test error."""
    if abs(difference) <= tolerance:
        return WITHIN
    return BETTER if difference < 0 else WORSE


def matches(summary: pd.DataFrame, anchor: dict) -> pd.Series:
    found = pd.Series(True, index=summary.index)
    for field, column in MATCHED.items():
        wanted = anchor[field]
        if not wanted:
            continue
        if column not in summary:
            return pd.Series(False, index=summary.index)
        values = summary[column].map(lambda v, c=column: value_label(c, v))
        found &= values == wanted
    return found


def _stabilization_labels(anchors: pd.DataFrame) -> None:
    known = set(NORM_LABELS.values())
    unknown = sorted(set(anchors["stabilization"]) - known - {""})
    if unknown:
        raise ValueError(f"anchors: unknown stabilization(s) {unknown}; use {sorted(known)}")


def _condition_labels(summary: pd.DataFrame) -> list[str]:
    """What else identifies each condition beyond the matched keys (e.g. `feedback.scale=...`):
    the keys that vary among conditions sharing the matched values."""
    extra = varying_keys(summary, list(MATCHED.values()), summary_keys(summary))
    return [
        ", ".join(f"{key}={value_label(key, row[key])}" for key in extra if not missing(row[key]))
        for row in summary.to_dict("records")
    ]


def compare(
    summary: pd.DataFrame,
    anchors: pd.DataFrame,
    tolerance: float = ANCHOR_TOLERANCE,
    metric: str = "final",
) -> pd.DataFrame:
    """One row per (anchor, matching condition) in anchor order, then condition order; an
    anchor without a matching condition gives one `not run` row. Errors are in percent."""
    _stabilization_labels(anchors)
    summary = summary.reset_index(drop=True)
    conditions = _condition_labels(summary)
    rows = []
    for anchor in anchors.to_dict("records"):
        published = published_error(anchor)
        head = {key: anchor[key] for key in ("source", *MATCHED)}
        tail = {"published_epochs": anchor["epochs"], "published_selection": anchor["selection"]}
        matched = summary.index[matches(summary, anchor)]
        if matched.empty:
            rows.append(
                {
                    "metric": metric,
                    **head,
                    "published": published,
                    "tolerance": tolerance,
                    "verdict": NOT_RUN,
                    **tail,
                }
            )
            continue
        for position in matched:
            row = summary.loc[position]
            n = int(row["n"])
            mean, std = 100 * float(row["test_error_mean"]), 100 * float(row["test_error_std"])
            difference = mean - published if n else float("nan")
            rows.append({
                "metric": metric, **head, "condition": conditions[position],
                SELECTED: row.get(SELECTED, ""), "ours_mean": mean if n else float("nan"),
                "ours_std": std if n > 1 else float("nan"), "n": n, "published": published,
                "difference": difference, "tolerance": tolerance,
                "verdict": verdict(difference, tolerance) if n else NO_RUN_FINISHED, **tail,
            })  # fmt: skip
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))


def compare_all(
    summaries: Mapping[str, pd.DataFrame],
    anchors: pd.DataFrame,
    tolerance: float = ANCHOR_TOLERANCE,
) -> pd.DataFrame:
    """`compare` for each --metric choice -> its summary, stacked."""
    parts = [compare(summary, anchors, tolerance, metric) for metric, summary in summaries.items()]
    return pd.concat(parts, ignore_index=True)


def _text(column: pd.Series) -> list[str]:
    return ["" if pd.isna(value) else str(value) for value in column]


def _number(value: object, digits: int = 2) -> str:
    return "" if pd.isna(value) else f"{float(value):.{digits}f}"


def anchors_markdown(table: pd.DataFrame, tolerance: float, metric_text: dict) -> str:
    """A Markdown section per metric: the comparison table and a note stating the tolerance."""
    parts = []
    for metric, rows in table.groupby("metric", sort=False):
        shown = pd.DataFrame({
            "source": rows["source"].str.split(" ").str[0].str.rstrip(","),
            "dataset": rows["dataset"], "model": rows["model"].replace("", "any"),
            "rule": rows["rule"], "stabilization": rows["stabilization"],
            "optimizer": rows["optimizer"].replace("", "any"),
            "condition": _text(rows["condition"]), SELECTED: _text(rows[SELECTED]),
            "ours (%)": [
                format_cell(m / 100, s / 100, int(n), 0)
                for m, s, n in zip(rows["ours_mean"], rows["ours_std"], rows["n"].fillna(0),
                                   strict=True)
            ],
            "published (%)": rows["published"].map(_number),
            "difference": rows["difference"].map(lambda d: "" if pd.isna(d) else f"{d:+.2f}"),
            "verdict": rows["verdict"],
        })  # fmt: skip
        if not any(shown[SELECTED]):
            shown = shown.drop(columns=SELECTED)
        if not any(shown["condition"]):
            shown = shown.drop(columns="condition")
        parts.append(
            f"## Test error {metric_text[metric]}\n\n"
            + shown.to_markdown(index=False, disable_numparse=True)
            + "\n"
        )
    note = (
        f"Test error (%): ours = mean ± sample std over seeds (n = finished runs); difference = "
        f"ours - published, in points; verdict: within tolerance when |difference| <= "
        f"{tolerance:g} point(s), better / worse beyond it; not run: no condition matches the "
        f"published cell. Sources and how each published epoch was selected: anchors.csv. "
        f"The paper's five headline cells are listed by leaderboards without their condition "
        f"(matched to uSF with BN+BM, any model).\n"
    )
    return "\n".join(parts) + "\n" + note

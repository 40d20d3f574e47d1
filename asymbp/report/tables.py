"""The paper's table from a summary: a row per feedback rule x stabilization, a column per
dataset (any grouping on request), cells `mean ± std (n=N)`, as Markdown and as LaTeX."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd

from asymbp.report.labels import (
    HEADERS,
    METRIC_TEXT,
    row_label,
    sorted_positions,
    varying_keys,
    with_rule,
)
from asymbp.report.summary import SELECTED, summary_keys

LATEX_SPECIALS = str.maketrans({
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}",
})  # fmt: skip


def latex_escape(text: str) -> str:
    return text.translate(LATEX_SPECIALS)


@dataclass(frozen=True)
class Marks:
    """How a table writes plus-minus, the divergence mark and plain text, per output format."""

    pm: str
    dagger: str
    escape: Callable[[str], str]


MARKDOWN = Marks("±", "†", str)
LATEX = Marks(r"$\pm$", r"$^\dagger$", latex_escape)


def format_cell(mean: float, std: float, n: int, n_diverged: int, marks: Marks = MARKDOWN) -> str:
    """`mean ± std (n=N)` in percent, `†k` when k runs diverged; `diverged †k` when all did."""
    if n == 0:
        return f"diverged {marks.dagger}{n_diverged}" if n_diverged else ""
    text = f"{100 * mean:.2f}"
    if n > 1:
        text += f" {marks.pm} {100 * std:.2f} (n={n})"
    if n_diverged:
        text += f" {marks.dagger}{n_diverged}"
    return text


def table_rows(summary: pd.DataFrame, rows: Sequence[str], cols: Sequence[str]) -> list[str]:
    """`rows` plus every other condition key that varies inside a cell, so that each cell holds
    exactly one condition and nothing is pooled silently."""
    keys = summary_keys(summary)
    unknown = [key for key in (*rows, *cols) if key not in keys]
    if unknown:
        raise ValueError(f"unknown grouping key(s) {unknown}; choose from {keys}")
    if set(rows) & set(cols):
        raise ValueError(f"keys in both rows and columns: {sorted(set(rows) & set(cols))}")
    fixed = with_rule([*rows, *cols], summary.columns)
    return [*rows, *varying_keys(summary, fixed, keys)]


def paper_table(
    summary: pd.DataFrame,
    rows: Sequence[str] = ("feedback", "norm"),
    cols: Sequence[str] = ("dataset",),
    marks: Marks = MARKDOWN,
) -> pd.DataFrame:
    """The paper's layout by default: a row per feedback rule x stabilization, a column per
    dataset, cells from `format_cell`. Returns a frame of strings: label columns, then cells."""
    rows = table_rows(summary, rows, cols)
    records = summary.to_dict("records")
    row_labels = [tuple(marks.escape(row_label(key, r)) for key in rows) for r in records]
    col_labels = [marks.escape(" / ".join(row_label(key, r) for key in cols)) for r in records]
    cells = {
        (row, col): format_cell(
            r["test_error_mean"], r["test_error_std"], int(r["n"]), int(r["n_diverged"]), marks
        )
        + (marks.escape(f" [{r[SELECTED]}]") if r.get(SELECTED) else "")
        for row, col, r in zip(row_labels, col_labels, records, strict=True)
    }
    row_order = _in_order(summary, rows, row_labels)
    col_order = _in_order(summary, cols, col_labels)
    headers = [marks.escape(HEADERS.get(key, key)) for key in rows]
    table = [[*row, *(cells.get((row, col), "") for col in col_order)] for row in row_order]
    return pd.DataFrame(table, columns=[*headers, *col_order], dtype=object)


def _in_order(summary: pd.DataFrame, keys: Sequence[str], labels: list) -> list:
    """The distinct `labels` (one per summary row) in the paper's order of `keys`."""
    positions = sorted_positions(summary, with_rule(keys, summary.columns))
    return list(dict.fromkeys(labels[i] for i in positions))


def table_note(metric: str, marks: Marks = MARKDOWN) -> str:
    text = marks.escape
    return (
        text(f"Test error (%) {METRIC_TEXT[metric]}: mean ")
        + marks.pm
        + text(" sample std over seeds, n = finished runs (shown when n > 1). ")
        + marks.dagger
        + text("k: k runs of the condition diverged and are left out of the mean. ")
        + text("Empty: no finished run.")
    )


def markdown_table(table: pd.DataFrame, metric: str) -> str:
    body = table.to_markdown(index=False, disable_numparse=True)
    return f"{body}\n\n{table_note(metric)}\n"


def latex_table(table: pd.DataFrame, metric: str, n_label_columns: int) -> str:
    layout = "l" * n_label_columns + "r" * (table.shape[1] - n_label_columns)
    latex = table.to_latex(
        index=False,
        escape=False,
        column_format=layout,
        caption=table_note(metric, LATEX),
        label="tab:asymbp",
    )
    return latex if latex.endswith("\n") else latex + "\n"

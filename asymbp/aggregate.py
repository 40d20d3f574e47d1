"""Runs -> tidy DataFrames -> CSVs, the paper's table (Markdown and LaTeX) and figures.

`asymbp-aggregate RUN_DIR... --out DIR` (or `python -m asymbp.aggregate`) finds every run
directory (a folder holding `config.yaml`; hidden folders such as Hydra's `.hydra/` are skipped)
under the given paths at any depth and writes into DIR:

    runs.csv          one row per run: status, group choices, seed, final metrics, config
    history.csv       every run's per-epoch values in long form: run, epoch, metric, layer, value
    summary.csv       per condition (config without seed): test error mean, std, n, n_diverged
    table_paper.md    rows: feedback rule x stabilization, columns: dataset (printed too)
    table_paper.tex   the same table for LaTeX (booktabs)
    fig_*.png/.pdf    see asymbp/plots.py

CSV and table files are a pure function of the run directories: rerunning gives the same bytes.
"""

from __future__ import annotations

import argparse
import json
import numbers
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from asymbp.runs import NON_IDENTITY_KEYS

GROUPS = ("dataset", "model", "feedback", "norm", "optimizer")
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

# --metric choice -> the accuracy column of runs.csv whose complement is the reported error.
METRICS = {"final": "test_acc", "best_val": "test_acc_at_best_val"}
METRIC_TEXT = {"final": "at the last epoch", "best_val": "at the epoch of best validation accuracy"}
SUMMARY_STATS = (
    "metric",
    "test_error_mean",
    "test_error_std",
    "n",
    "n_diverged",
    "n_incomplete",
    "n_broken",
)

# the paper's 15 datasets in the order of its table (as recalled in PAPER.md)
PAPER_DATASETS = (
    "mnist", "cifar10", "cifar100", "svhn", "stl10", "caltech101", "caltech256", "icubworld",
    "flowers17", "flowers102", "pubfig83", "sufrw", "lfw", "scene67", "timit",
)  # fmt: skip
ORDERS = {
    "feedback": ("bp", "usf", "brsf", "frsf", "rndf", "sc"),
    "norm": ("none", "bn", "bm", "bn_bm"),
    "dataset": PAPER_DATASETS + ("fashion_mnist", "digits", "synthetic"),
}
NORM_LABELS = {"none": "none", "bn": "BN", "bm": "BM", "bn_bm": "BN+BM"}
HEADERS = {"feedback": "rule", "norm": "stabilization"}
CONCORDANCE = "feedback.concordance"


# ----------------------------------------------------------------------------- reading runs


def find_run_dirs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Every run directory under `paths` (at any depth), once each, sorted by path."""
    found: dict[Path, Path] = {}
    for top in paths:
        for run_dir in _walk(Path(top)):
            found.setdefault(run_dir.resolve(), run_dir)
    return sorted(found.values(), key=lambda path: path.as_posix())


def _walk(top: Path) -> Iterable[Path]:
    for dirpath, dirnames, filenames in os.walk(top):
        if "config.yaml" in filenames:
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
    config, problem = _load(path / "config.yaml", _parse_config)
    if problem:
        return RunRecord({**lead, "status": "broken", "reason": problem}, {}, {}, None)
    metrics, metrics_problem = _load(path / "metrics.json", _parse_metrics)
    history, history_problem = _load(path / "history.csv", _parse_history)
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
    if not (path / "DONE").exists():
        return "incomplete", "no DONE"
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


HISTORY_COLUMNS = ["run", "epoch", "metric", "layer", "value"]


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


# ----------------------------------------------------------------------------- summarizing


def config_columns(frame: pd.DataFrame) -> list[str]:
    """The columns of a runs frame that come from config.yaml (dotted keys)."""
    derived = {*LEAD_COLUMNS, *METRIC_COLUMNS}
    return [c for c in frame.columns if c not in derived and not c.startswith(METRIC_PREFIX)]


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
    return [c for c in summary.columns if c not in SUMMARY_STATS]


# ----------------------------------------------------------------------------- ordering, labels


def _missing(value: object) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def _value_key(column: str, value: object) -> tuple:
    """Sort key: the paper's order for known columns, numbers before text, missing last."""
    order = ORDERS.get(column, ())
    rank = order.index(value) if value in order else len(order)
    if _missing(value):
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
    if _missing(feedback):
        return ""
    if feedback == "sc" and not _missing(concordance):
        return f"sc (p={float(concordance):g})"
    return str(feedback)


def value_label(key: str, value: object) -> str:
    if _missing(value):
        return ""
    if key == "norm":
        return NORM_LABELS.get(value, str(value))
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
    """The `candidates` that take more than one value among rows sharing the `fixed` values."""
    candidates = [c for c in candidates if c not in fixed]
    if frame.empty or not candidates:
        return []
    if not fixed:
        counts = frame[candidates].nunique(dropna=False).to_frame().T
    else:
        grouped = frame.groupby(list(fixed), dropna=False, sort=False)[candidates]
        counts = grouped.nunique(dropna=False)
    return [c for c in candidates if (counts[c] > 1).any()]


# ----------------------------------------------------------------------------- tables


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


# ----------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asymbp-aggregate",
        description="Aggregate asymbp run directories into CSVs, the paper's table and figures.",
    )
    parser.add_argument(
        "run_dirs", nargs="*", metavar="RUN_DIR", help="folders searched for runs at any depth"
    )
    parser.add_argument(
        "--out", default="outputs/aggregate", help="output folder (default: %(default)s)"
    )
    parser.add_argument(
        "--metric",
        choices=sorted(METRICS),
        default="final",
        help="final (default): test error at the last epoch; "
        "best_val: test error at the epoch of best validation accuracy",
    )
    parser.add_argument(
        "--rows",
        default="feedback,norm",
        help="comma-separated table row keys (default: %(default)s)",
    )
    parser.add_argument(
        "--cols", default="dataset", help="comma-separated table column keys (default: %(default)s)"
    )
    parser.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="KEY",
        help="config key to leave out of the condition (repeatable); always left out: "
        + ", ".join(NON_IDENTITY_KEYS),
    )
    parser.add_argument("--no-figures", action="store_true", help="skip the figures")
    return parser


def _keys(text: str) -> list[str]:
    return [key.strip() for key in text.split(",") if key.strip()]


def _error(message: str) -> int:
    print(f"asymbp-aggregate: {message}", file=sys.stderr)
    return 2


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=False, float_format="%.10g", lineterminator="\n")


def _report(runs: pd.DataFrame) -> None:
    counts = runs["status"].value_counts()
    parts = ", ".join(f"{counts.get(status, 0)} {status}" for status in STATUSES)
    print(f"{len(runs)} runs: {parts}")
    for entry in runs[runs["status"] == "broken"].itertuples():
        print(f"broken: {entry.run} ({entry.reason})", file=sys.stderr)


def write_outputs(
    out: Path,
    runs: pd.DataFrame,
    history: pd.DataFrame,
    summary: pd.DataFrame,
    rows: Sequence[str],
    cols: Sequence[str],
    metric: str,
) -> str:
    """Write the CSVs and both tables into `out`; return the Markdown table with its note."""
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in (("runs", runs), ("history", history), ("summary", summary)):
        write_csv(frame, out / f"{name}.csv")
    markdown = markdown_table(paper_table(summary, rows, cols), metric)
    latex = latex_table(paper_table(summary, rows, cols, LATEX), metric, len(rows))
    (out / "table_paper.md").write_text(markdown, encoding="utf-8")
    (out / "table_paper.tex").write_text(latex, encoding="utf-8")
    return markdown


def _input_problem(run_dirs: Sequence[str]) -> str:
    if not run_dirs:
        return "no run directories given (usage: asymbp-aggregate RUN_DIR... --out DIR)"
    missing = [path for path in run_dirs if not Path(path).is_dir()]
    return f"not a directory: {', '.join(missing)}" if missing else ""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    problem = _input_problem(args.run_dirs)
    if problem:
        return _error(problem)
    runs, history = collect(args.run_dirs)
    if runs.empty:
        where = ", ".join(args.run_dirs)
        return _error(f"no run directories (folders with config.yaml) found under {where}")
    ignore = (*NON_IDENTITY_KEYS, *args.ignore)
    summary = summarize(runs, args.metric, ignore)
    cols = _keys(args.cols)
    try:
        rows = table_rows(summary, _keys(args.rows), cols)
    except ValueError as exc:
        return _error(str(exc))
    if rows != _keys(args.rows):
        print(f"table rows extended by keys that vary within cells: {rows}", file=sys.stderr)
    markdown = write_outputs(Path(args.out), runs, history, summary, rows, cols, args.metric)
    _report(runs)
    print(markdown)
    if not args.no_figures:
        from asymbp.plots import write_figures  # matplotlib is only imported when drawing

        write_figures(runs, history, Path(args.out), args.metric, ignore)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

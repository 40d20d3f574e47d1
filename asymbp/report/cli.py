"""asymbp-aggregate: run directories -> CSVs, the paper's table (Markdown and LaTeX) and figures.

`asymbp-aggregate RUN_DIR... --out DIR` (or `python -m asymbp.report`) finds every run
directory (a folder holding `config.yaml` or `FAILED`; hidden folders such as Hydra's `.hydra/`
are skipped) under the given paths at any depth and writes into DIR:

    runs.csv          one row per run: status, reason, group choices, seed, final metrics, config
    history.csv       every run's per-epoch values in long form: run, epoch, metric, layer, value
    summary.csv       per condition (config without seed): test error mean, std, n, n_<status>
    table_paper.md    rows: feedback rule x stabilization, columns: dataset (printed too)
    table_paper.tex   the same table for LaTeX (booktabs)
    anchors.csv/.md   our conditions next to the published numbers of asymbp/report/anchors.csv,
                      at the last epoch and at the best validation epoch (asymbp.report.anchors)
    robustness.csv    with asymbp-eval results: per condition, attack setting, attacker and
                      epsilon, test accuracy under attack (mean, std over seeds); and
    robustness_gains.csv  per condition and epsilon: accuracy points over bp under the exact and
                      the rule attacker, and their difference (gradient masking)
    table_robustness.md  both as tables (asymbp.report.robustness)
    fig_*.png/.pdf    asymbp.report.figures.FIGURES

CSV and table files are a pure function of the run directories: rerunning gives the same bytes.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from asymbp.config import GROUPS
from asymbp.report import robustness as attacks
from asymbp.report.anchors import ANCHOR_TOLERANCE, anchors_markdown, compare_all, load_anchors
from asymbp.report.labels import METRIC_TEXT
from asymbp.report.read import STATUSES, collect
from asymbp.report.select import select_summary
from asymbp.report.summary import (
    METRICS,
    condition_columns,
    mark_duplicates,
    runs_without_validation,
    summarize,
)
from asymbp.report.tables import LATEX, latex_table, markdown_table, paper_table, table_rows
from asymbp.runs import NON_IDENTITY_KEYS

#: The files written into --out (figures: asymbp.report.figures).
RUNS_CSV, HISTORY_CSV, SUMMARY_CSV = "runs.csv", "history.csv", "summary.csv"
TABLE_MD, TABLE_TEX = "table_paper.md", "table_paper.tex"
ANCHORS_CSV, ANCHORS_MD = "anchors.csv", "anchors.md"
ROBUSTNESS_CSV, TABLE_ROBUSTNESS = "robustness.csv", "table_robustness.md"
GAINS_CSV = "robustness_gains.csv"


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
        "best_val: test error at the epoch of best validation accuracy; "
        "best_test: at the epoch of best test accuracy (biotorch's choice: optimistic, for "
        "comparing with their cells only)",
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
    parser.add_argument(
        "--select",
        action="append",
        default=[],
        metavar="KEY",
        help="config key chosen on validation per condition (repeatable, e.g. optimizer.lr): "
        "the value with the best mean validation accuracy wins, its test error is reported",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=ANCHOR_TOLERANCE,
        help="points of test error within which anchors.md calls us level with a published "
        "number (default: %(default)s)",
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


#: Statuses whose runs are listed one per line on stderr, with the reason.
LISTED = ("failed", "broken", "duplicate")


def _report(runs: pd.DataFrame) -> None:
    counts = runs["status"].value_counts()
    parts = ", ".join(f"{counts.get(status, 0)} {status}" for status in STATUSES)
    print(f"{len(runs)} runs: {parts}")
    for status in LISTED:
        for entry in runs[runs["status"] == status].itertuples():
            print(f"{status}: {entry.run} ({entry.reason})", file=sys.stderr)
    if counts.get("duplicate", 0):
        print(
            f"warning: {counts['duplicate']} run(s) repeat a condition and seed found elsewhere; "
            "each (condition, seed) is counted once (the others: status duplicate in runs.csv)",
            file=sys.stderr,
        )


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
    for name, frame in ((RUNS_CSV, runs), (HISTORY_CSV, history), (SUMMARY_CSV, summary)):
        write_csv(frame, out / name)
    markdown = markdown_table(paper_table(summary, rows, cols), metric)
    latex = latex_table(paper_table(summary, rows, cols, LATEX), metric, len(rows))
    (out / TABLE_MD).write_text(markdown, encoding="utf-8")
    (out / TABLE_TEX).write_text(latex, encoding="utf-8")
    return markdown


def _input_problem(run_dirs: Sequence[str]) -> str:
    if not run_dirs:
        return "no run directories given (usage: asymbp-aggregate RUN_DIR... --out DIR)"
    missing = [path for path in run_dirs if not Path(path).is_dir()]
    return f"not a directory: {', '.join(missing)}" if missing else ""


def _summary(
    runs: pd.DataFrame, metric: str, ignore: Sequence[str], select: Sequence[str]
) -> pd.DataFrame:
    """The summary under `metric`; with --select keys, each condition at its winning value."""
    if select:
        return select_summary(runs, metric, select, ignore)
    return summarize(runs, metric, ignore)


def _out_problem(out: Path) -> str:
    """Why the report cannot be written into `out` (checked before anything is read)."""
    if out.exists() and not out.is_dir():
        return f"--out {out} is a file, not a folder: give a folder (it is created if missing)"
    parent = out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"--out {out}: {parent} is a file, not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"--out {out}: {parent} is not writable: choose another --out"
    return ""


def _ignore_problem(runs: pd.DataFrame, ignore: Sequence[str]) -> str:
    """Why an --ignore key would change nothing: a key that no run's config has (a typo)."""
    known = sorted(set(condition_columns(runs, ())) - set(GROUPS))
    always = {*NON_IDENTITY_KEYS, "seed"}  # left out of every condition anyway
    unknown = [key for key in ignore if key not in known and key not in always]
    if not unknown:
        return ""
    hints = [difflib.get_close_matches(key, known, n=1) for key in unknown]
    named = ", ".join(
        f"{key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
        for key, hint in zip(unknown, hints, strict=True)
    )
    return f"unknown --ignore key {named}; the runs' config keys are: {', '.join(known)}"


def _best_val_problem(runs: pd.DataFrame) -> str:
    lacking = runs_without_validation(runs)
    if lacking.empty:
        return ""
    return (
        f"--metric best_val needs a validation split, but {len(lacking)} finished run(s) have "
        f"none (val_fraction=0), e.g. {lacking['run'].iloc[0]}: use --metric final, or leave "
        "those runs out"
    )


def _robustness(runs, out: Path, metric, ignore, select) -> pd.DataFrame | None:
    """robustness.csv and table_robustness.md when the runs hold attack results (asymbp-eval);
    their rows (None without results)."""
    results = attacks.collect(runs)
    if results.empty:
        return None
    from asymbp.report.figures import figure_runs  # the conditions' labels, as the figures'

    labelled, _ = figure_runs(runs, metric, ignore, select)
    summary = attacks.summarize(results, labelled)
    write_csv(summary, out / ROBUSTNESS_CSV)
    table = attacks.gains(summary)
    write_csv(table, out / GAINS_CSV)
    text = "\n".join(filter(None, [attacks.markdown(summary), attacks.gains_markdown(table)]))
    (out / TABLE_ROBUSTNESS).write_text(text, encoding="utf-8")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Path(args.out)
    problem = _input_problem(args.run_dirs) or _out_problem(out)
    if problem:
        return _error(problem)
    runs, history = collect(args.run_dirs)
    if runs.empty:
        where = ", ".join(args.run_dirs)
        return _error(f"no run directories (folders with config.yaml) found under {where}")
    problem = _ignore_problem(runs, args.ignore)
    if problem:
        return _error(problem)
    ignore = (*NON_IDENTITY_KEYS, *args.ignore)
    runs = mark_duplicates(runs, ignore)
    problem = _best_val_problem(runs) if args.metric != "final" else ""
    if problem:
        return _error(problem)
    # anchors: at every metric, those of a validation epoch only when every finished run has one
    metrics = [m for m in METRICS if m == args.metric or _best_val_problem(runs) == ""]
    cols = _keys(args.cols)
    try:
        summaries = {metric: _summary(runs, metric, ignore, args.select) for metric in metrics}
        summary = summaries[args.metric]
        rows = table_rows(summary, _keys(args.rows), cols)
        anchors = compare_all(summaries, load_anchors(), args.tolerance)
    except ValueError as exc:
        return _error(str(exc))
    if rows != _keys(args.rows):
        print(f"table rows extended by keys that vary within cells: {rows}", file=sys.stderr)
    try:
        markdown = write_outputs(out, runs, history, summary, rows, cols, args.metric)
        write_csv(anchors, out / ANCHORS_CSV)
        anchors_text = anchors_markdown(anchors, args.tolerance, METRIC_TEXT)
        (out / ANCHORS_MD).write_text(anchors_text, encoding="utf-8")
        robust = _robustness(runs, out, args.metric, ignore, args.select)
        _report(runs)
        print(markdown)
        if not args.no_figures:
            from asymbp.report.figures import write_figures  # matplotlib only when drawing

            write_figures(runs, history, out, args.metric, ignore, args.select, robust)
    except OSError as exc:
        return _error(f"cannot write into --out {out}: {exc.strerror or exc}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

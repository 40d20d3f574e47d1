"""asymbp-aggregate: run directories -> CSVs, the paper's table (Markdown and LaTeX) and figures.

`asymbp-aggregate RUN_DIR... --out DIR` (or `python -m asymbp.report`) finds every run
directory (a folder holding `config.yaml`; hidden folders such as Hydra's `.hydra/` are skipped)
under the given paths at any depth and writes into DIR:

    runs.csv          one row per run: status, group choices, seed, final metrics, config
    history.csv       every run's per-epoch values in long form: run, epoch, metric, layer, value
    summary.csv       per condition (config without seed): test error mean, std, n, n_diverged
    table_paper.md    rows: feedback rule x stabilization, columns: dataset (printed too)
    table_paper.tex   the same table for LaTeX (booktabs)
    anchors.csv/.md   our conditions next to the published numbers of asymbp/report/anchors.csv,
                      at the last epoch and at the best validation epoch (asymbp.report.anchors)
    fig_*.png/.pdf    asymbp.report.figures.FIGURES

CSV and table files are a pure function of the run directories: rerunning gives the same bytes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from asymbp.report.anchors import TOLERANCE, anchors_markdown, compare_all, load_anchors
from asymbp.report.labels import METRIC_TEXT
from asymbp.report.read import STATUSES, collect
from asymbp.report.select import select_summary
from asymbp.report.summary import METRICS, summarize
from asymbp.report.tables import LATEX, latex_table, markdown_table, paper_table, table_rows
from asymbp.runs import NON_IDENTITY_KEYS

#: The files written into --out (figures: asymbp.report.figures).
RUNS_CSV, HISTORY_CSV, SUMMARY_CSV = "runs.csv", "history.csv", "summary.csv"
TABLE_MD, TABLE_TEX = "table_paper.md", "table_paper.tex"
ANCHORS_CSV, ANCHORS_MD = "anchors.csv", "anchors.md"


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
        default=TOLERANCE,
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
    cols = _keys(args.cols)
    try:
        summaries = {metric: _summary(runs, metric, ignore, args.select) for metric in METRICS}
        summary = summaries[args.metric]
        rows = table_rows(summary, _keys(args.rows), cols)
        anchors = compare_all(summaries, load_anchors(), args.tolerance)
    except ValueError as exc:
        return _error(str(exc))
    if rows != _keys(args.rows):
        print(f"table rows extended by keys that vary within cells: {rows}", file=sys.stderr)
    markdown = write_outputs(Path(args.out), runs, history, summary, rows, cols, args.metric)
    write_csv(anchors, Path(args.out) / ANCHORS_CSV)
    anchors_text = anchors_markdown(anchors, args.tolerance, METRIC_TEXT)
    (Path(args.out) / ANCHORS_MD).write_text(anchors_text, encoding="utf-8")
    _report(runs)
    print(markdown)
    if not args.no_figures:
        from asymbp.report.figures import write_figures  # matplotlib is only imported to draw

        write_figures(runs, history, Path(args.out), args.metric, ignore)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

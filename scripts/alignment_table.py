"""Per condition, the last epoch's alignment, averaged over layers and seeds, from an aggregate.

    python scripts/alignment_table.py REPORT_DIR [--out FILE.md]

REPORT_DIR is an `asymbp-aggregate --out` folder (its runs.csv and history.csv). Columns, for the
finished runs of each dataset x rule x stabilization (mean over seeds):
- angle_error: angle between the error the rule sends down and backprop's, averaged over the layers
  whose input error trains a layer below (all but the first);
- grad_cosine: cosine between the rule's weight gradient and backprop's, averaged over the hidden
  layers (all but the output layer, where every local rule's gradient is exact);
- angle_VW and norm_VW (|V|/|W|): averaged over the layers that have a V (none under dfa).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from asymbp.report.labels import sort_rows, value_label

MEASURES = ("angle_error", "grad_cosine", "angle_VW", "norm_VW")


def layer_means(history: pd.DataFrame) -> pd.DataFrame:
    """One row per run: each measure averaged over the layers it is defined for."""
    values = history[history["metric"].isin(MEASURES)].dropna(subset=["value"])
    values = values[values["epoch"] == values.groupby("run")["epoch"].transform("max")]
    order = {run: list(pd.unique(rows["layer"])) for run, rows in values.groupby("run")}
    pairs = zip(values["run"], values["layer"], strict=True)
    position = [(order[run].index(layer), len(order[run])) for run, layer in pairs]
    first = [index == 0 for index, _ in position]
    last = [index == count - 1 for index, count in position]
    keep = ~(
        ((values["metric"] == "angle_error") & pd.Series(first, index=values.index))
        | ((values["metric"] == "grad_cosine") & pd.Series(last, index=values.index))
    )
    return values[keep].groupby(["run", "metric"])["value"].mean().unstack("metric").reset_index()


def alignment_table(report: Path) -> pd.DataFrame:
    runs = pd.read_csv(report / "runs.csv")
    runs = runs[runs["status"] == "done"]
    means = layer_means(pd.read_csv(report / "history.csv")).merge(
        runs[["run", "dataset", "feedback", "norm"]], on="run"
    )
    table = means.groupby(["dataset", "feedback", "norm"], sort=False)[
        [m for m in MEASURES if m in means]
    ].mean()
    table = sort_rows(table.reset_index(), ["dataset", "feedback", "norm"])
    table["norm"] = [value_label("norm", norm) for norm in table["norm"]]
    return table.rename(columns={"feedback": "rule", "norm": "stabilization"})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--out", type=Path, help="write the Markdown table here too")
    args = parser.parse_args(argv)
    markdown = alignment_table(args.report).to_markdown(index=False, floatfmt=".2f")
    print(markdown)
    if args.out is not None:
        args.out.write_text(markdown + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

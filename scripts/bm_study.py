"""Rank the Batch Manhattan variants of experiment=bm_study on validation, and show which drift.

    python scripts/bm_study.py RUN_DIR... [--out FILE.md]

A variant is where the sign is taken (norm.sign_of) and what it covers (norm.scope). For each
variant and rule, bm_lr is chosen on validation (the best mean over seeds of the best validation
accuracy: asymbp-aggregate --select optimizer.bm_lr --metric best_val), and at that bm_lr the
table gives, mean +- std over seeds:
  val best      validation error at the best-validation epoch (what the ranking uses)
  test best     test error at that epoch
  test last     test error at the last epoch
  drift         validation error at the last epoch minus at the best one (points): > 0 means the
                run got worse after its best epoch
  loss rise     last epoch's training loss / the lowest over the run (1.0: still at its lowest)
Variants are ranked by their mean `val best` over the rules (bp and usf); bp without BM (norm
none and bn, lr chosen on validation the same way) is shown as the reference. The test set takes
no part in any choice. Writes the table to --out as well (Markdown) when given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from asymbp.files import atomic_write
from asymbp.report.read import collect
from asymbp.report.select import winners

VARIANT = ["norm.sign_of", "norm.scope"]
#: bm_lr for the variants, lr for the reference without BM: one of them varies per condition.
SELECT = ["optimizer.bm_lr", "optimizer.lr"]


def per_run(runs: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """Each finished run's errors (%), drift and loss rise, from runs.csv's and history's rows."""
    wide = history[history["layer"].isna() | (history["layer"] == "")]
    wide = wide.pivot_table(index=["run", "epoch"], columns="metric", values="value").reset_index()
    rows = []
    for run, h in wide.groupby("run"):
        h = h.sort_values("epoch")
        best = h["val_acc"].idxmax()
        rows.append({
            "run": run,
            "val best": 100 * (1 - h.loc[best, "val_acc"]),
            "test best": 100 * (1 - h.loc[best, "test_acc"]),
            "test last": 100 * (1 - h["test_acc"].iloc[-1]),
            "drift": 100 * (h.loc[best, "val_acc"] - h["val_acc"].iloc[-1]),
            "loss rise": h["train_loss"].iloc[-1] / h["train_loss"].min(),
        })  # fmt: skip
    return runs.merge(pd.DataFrame(rows), on="run")


def variant(row) -> str:
    if not row["norm.batch_manhattan"]:
        return f"reference: no BM (norm={row['norm']})"
    scope = {"all": "every parameter", "hidden": "output layer plain SGD"}.get(
        row["norm.scope"], f"scope {row['norm.scope']}"
    )
    return f"sign of {row['norm.sign_of']}, {scope}"


def table(runs: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    done = runs[runs["status"] == "done"]
    if done.empty:
        raise ValueError("no finished run of experiment=bm_study found")
    done = done.assign(variant=[variant(row) for row in done.to_dict("records")])
    chosen = done.loc[sorted(winners(done, "best_val", (), SELECT))]
    measured = per_run(chosen, history)
    values = ["val best", "test best", "test last", "drift", "loss rise"]
    keys = ["variant", "feedback", *SELECT]
    stats = measured.groupby(keys)[values].agg(["mean", "std"])
    seeds = measured.groupby(keys)["run"].count()
    out = pd.DataFrame(index=stats.index)
    for value in values:
        digits = 2
        out[value] = [
            f"{m:.{digits}f} ± {0 if pd.isna(s) else s:.{digits}f}"
            for m, s in zip(stats[(value, "mean")], stats[(value, "std")], strict=True)
        ]
    out["seeds"] = seeds
    out = out.reset_index()
    bm = measured[measured["norm.batch_manhattan"].astype(bool)]
    rank = bm.groupby("variant")["val best"].mean().rank(method="min").rename("rank")
    out = out.merge(rank.reset_index(), on="variant", how="left")
    out = out.sort_values(["rank", "variant", "feedback"], na_position="last")
    out["rank"] = [f"{r:.0f}" if pd.notna(r) else "-" for r in out["rank"]]
    # a rate the variant does not use is left blank: lr without BM or for the plain output layer
    bm = ~out["variant"].str.startswith("reference")
    plain = ~bm | out["variant"].str.contains("plain SGD")
    for key, used in (("optimizer.bm_lr", bm), ("optimizer.lr", plain)):
        out[key] = [f"{v:g}" if u else "" for v, u in zip(out[key], used, strict=True)]
    return out[["rank", *keys, *values, "seeds"]]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories or folders holding them")
    parser.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    args = parser.parse_args(argv)
    runs, history = collect(args.runs)
    missing = [key for key in (*VARIANT, *SELECT) if key not in runs]
    if runs.empty or missing:
        print(f"bm_study: no runs of experiment=bm_study under {args.runs}", file=sys.stderr)
        return 2
    try:
        result = table(runs, history)
    except ValueError as error:
        print(f"bm_study: {error}", file=sys.stderr)
        return 2
    text = tabulate(result, headers="keys", tablefmt="github", showindex=False)
    print(text)
    if args.out:
        atomic_write(args.out, lambda handle: handle.write((text + "\n").encode()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

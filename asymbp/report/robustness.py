"""Attack results (each run directory's robustness/*.json, written by asymbp-eval) -> one row per
(run, attack setting, attacker, epsilon), and per condition: robustness.csv (accuracy mean and
sample std over seeds) and table_robustness.md (a table per dataset, stabilization and attack
setting: conditions x attackers, epsilons as columns)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from asymbp.robustness import ATTACKERS, RESULTS_DIR

ROW_COLUMNS = ["run", "attack", "settings", "attacker", "epsilon", "accuracy", "n", "source"]
#: The keys a robustness.csv row is grouped by, before its statistics.
KEYS = ["dataset", "stabilization", "condition", "attack", "settings", "attacker", "epsilon"]
STATS = ["accuracy_mean", "accuracy_std", "n_runs", "n_images"]


def read_results(run_dir: Path) -> list[dict]:
    """The rows of one run's result files; an unreadable file is left out with a line on
    stderr (the aggregator never stops on one bad file)."""
    rows = []
    for path in sorted((run_dir / RESULTS_DIR).glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            for row in record["results"]:
                rows.append(
                    {
                        "run": run_dir.as_posix(),
                        "attack": record["attack"],
                        "settings": path.stem.rpartition("-")[2],
                        "attacker": row["attacker"],
                        "epsilon": float(row["epsilon"]),
                        "accuracy": float(row["accuracy"]),
                        "n": int(row["n"]),
                        "source": row.get("source"),
                    }
                )
        except (OSError, ValueError, KeyError, TypeError) as error:
            print(f"robustness: {path} unreadable ({type(error).__name__}): left out",
                  file=sys.stderr)  # fmt: skip
    return rows


def collect(runs: pd.DataFrame) -> pd.DataFrame:
    """Every attack result of the `runs` frame's done runs, in long form (ROW_COLUMNS)."""
    done = runs[runs["status"] == "done"]
    rows = [row for run in done["run"] for row in read_results(Path(run))]
    return pd.DataFrame(rows, columns=ROW_COLUMNS)


def summarize(results: pd.DataFrame, labelled: pd.DataFrame) -> pd.DataFrame:
    """Per condition (`labelled`: figure_runs' frame, with `series` and `stabilization`), attack
    setting, attacker and epsilon: accuracy mean and sample std over the runs (seeds), the
    number of runs and of images per run. Empty when there are no results."""
    if results.empty:
        return pd.DataFrame(columns=[*KEYS, *STATS])
    labels = labelled[["run", "dataset", "stabilization", "series"]].rename(
        columns={"series": "condition"}
    )
    data = results.merge(labels, on="run")
    order = {name: rank for rank, name in enumerate(labels["condition"].drop_duplicates())}
    grouped = data.groupby(KEYS, sort=False)
    summary = grouped.agg(
        accuracy_mean=("accuracy", "mean"),
        accuracy_std=("accuracy", "std"),
        n_runs=("accuracy", "count"),
        n_images=("n", "max"),
    ).reset_index()
    summary["_condition"] = summary["condition"].map(order)
    summary["_attacker"] = summary["attacker"].map({a: i for i, a in enumerate(ATTACKERS)})
    columns = ["dataset", "stabilization", "attack", "settings", "_condition", "_attacker"]
    summary = summary.sort_values([*columns, "epsilon"], kind="stable")
    return summary.drop(columns=["_condition", "_attacker"]).reset_index(drop=True)


def _cell(row) -> str:
    mean = 100 * row["accuracy_mean"]
    if row["n_runs"] > 1 and pd.notna(row["accuracy_std"]):
        return f"{mean:.1f} ± {100 * row['accuracy_std']:.1f}"
    return f"{mean:.1f}"


def markdown(summary: pd.DataFrame) -> str:
    """table_robustness.md: per dataset, stabilization and attack setting, test accuracy (%)
    under attack, mean ± std over seeds: a row per condition and attacker, a column per eps."""
    if summary.empty:
        return ""
    parts = []
    panels = summary.groupby(["dataset", "stabilization", "attack", "settings"], sort=False)
    for (dataset, stabilization, attack, settings), panel in panels:
        n_images = int(panel["n_images"].max())
        parts += [
            f"### {attack.upper()} on {dataset} ({stabilization}; settings {settings}, "
            f"{n_images} test images)",
            "",
        ]
        wide = panel.assign(cell=panel.apply(_cell, axis=1)).pivot_table(
            index=["condition", "attacker"], columns="epsilon", values="cell", aggfunc="first",
            sort=False,
        )  # fmt: skip
        wide.columns = [f"eps {eps:g}" for eps in wide.columns]
        parts += [wide.reset_index().to_markdown(index=False), ""]
    note = (
        "Test accuracy (%) under attack, mean ± sample std over seeds. exact: gradients of the "
        "network's function; rule: through the run's own feedback rule (what a naive attack on "
        "an asymbp model uses); transfer: examples made on the run attack.transfer_from names "
        "(by default the bp run of the same condition and seed). eps 0 is the clean accuracy on "
        "the same images."
    )
    return "\n".join([note, "", *parts])


#: The condition every other is compared with in the gains table.
REFERENCE = "bp"
GAIN_COLUMNS = [
    "dataset", "stabilization", "attack", "settings", "epsilon", "condition", "exact", "rule",
    "transfer", "bp_exact", "gain_exact", "gain_rule", "masked",
]  # fmt: skip


def gains(summary: pd.DataFrame) -> pd.DataFrame:
    """Per condition, attack setting and epsilon > 0: mean accuracy under each attacker, bp's under
    the exact attacker, and in accuracy points: gain_exact = exact - bp_exact (robustness the
    network has), gain_rule = rule - bp_exact (what a naive attack by the rule's own gradients
    would credit it with), masked = rule - exact (the part of gain_rule that is gradient
    masking). Empty without a bp condition to compare with."""
    data = summary[summary["epsilon"] > 0]
    if data.empty:
        return pd.DataFrame(columns=GAIN_COLUMNS)
    keys = ["dataset", "stabilization", "attack", "settings", "epsilon", "condition"]
    wide = data.pivot_table(
        index=keys, columns="attacker", values="accuracy_mean", sort=False
    ).reset_index()
    for attacker in ATTACKERS:
        if attacker not in wide:
            wide[attacker] = float("nan")
    reference = wide[wide["condition"] == REFERENCE][[*keys[:-1], "exact"]]
    wide = wide.merge(reference.rename(columns={"exact": "bp_exact"}), on=keys[:-1])
    wide = wide[wide["condition"] != REFERENCE]
    wide["gain_exact"] = 100 * (wide["exact"] - wide["bp_exact"])
    wide["gain_rule"] = 100 * (wide["rule"] - wide["bp_exact"])
    wide["masked"] = 100 * (wide["rule"] - wide["exact"])
    return wide[GAIN_COLUMNS].reset_index(drop=True)


def gains_markdown(table: pd.DataFrame) -> str:
    """The gains table in points, a block per dataset, stabilization and attack setting."""
    if table.empty:
        return ""
    parts = [
        "Against bp under the exact attacker, in points of test accuracy: gain_exact = exact - "
        "bp (real robustness), gain_rule = rule - bp (what attacking with the rule's own "
        "gradients credits), masked = rule - exact (the gradient-masking part of gain_rule).",
        "",
    ]
    panels = table.groupby(["dataset", "stabilization", "attack", "settings"], sort=False)
    for (dataset, stabilization, attack, settings), panel in panels:
        shown = panel[["condition", "epsilon", "gain_exact", "gain_rule", "masked"]]
        parts += [
            f"### Gains over bp: {attack.upper()} on {dataset} ({stabilization}; settings "
            f"{settings})",
            "",
            shown.to_markdown(index=False, floatfmt=("", "g", "+.1f", "+.1f", "+.1f")),
            "",
        ]
    return "\n".join(parts)

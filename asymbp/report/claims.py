"""Verdicts on the paper's four claims, computed from an aggregate's numbers, and docs/RESULTS.md
that shows them with the paper table and figures (nothing in it is written by hand).

    python scripts/write_results.py REPORT_DIR [--out docs] [--command "how the report was made"]

REPORT_DIR is what `asymbp-aggregate` (or scripts/reproduce_paper.py) wrote: summary.csv,
runs.csv, table_paper.md and the fig_*.png files. Figures are copied to <out>/results/.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from asymbp.report.anchors import load_anchors
from asymbp.report.cli import ANCHORS_MD, RUNS_CSV, SUMMARY_CSV, TABLE_MD
from asymbp.report.labels import NORM_LABELS

#: The stabilized conditions: every `norm` but none.
STABILIZED = tuple(norm for norm in NORM_LABELS if norm != "none")
#: The paper's rules whose feedback has the signs of W (claims 1 and 3).
SIGN_CONCORDANT = ("usf", "brsf", "frsf")


def _biotorch_usf_fashion() -> float:
    """biotorch's published uSF error on Fashion-MNIST (LeNet, 100 epochs, single run), in
    percent, from the package's anchors.csv."""
    anchors = load_anchors()
    row = anchors[
        anchors["source"].str.startswith("biotorch")
        & (anchors["dataset"] == "fashion_mnist")
        & (anchors["rule"] == "usf")
    ]
    return float(row["value"].iloc[0])


BIOTORCH_USF_FASHION = _biotorch_usf_fashion()
#: "within about one point" (claim 1) and the tolerance for "matches" (claim 3), in points.
POINT = 1.0


def load(report: Path) -> pd.DataFrame:
    summary = pd.read_csv(report / SUMMARY_CSV)
    # n counts finished runs; a condition whose runs all diverged has n = 0 and n_diverged > 0.
    summary = summary[(summary["n"] > 0) | (summary["n_diverged"] > 0)].copy()
    summary["error"] = 100 * summary["test_error_mean"]
    summary["std"] = 100 * summary["test_error_std"].fillna(0.0)
    for column, default in (("feedback.scale", "1.0"), ("feedback.magnitude", "uniform")):
        if column in summary:
            summary[column] = [default if pd.isna(v) else str(v) for v in summary[column]]
    return summary


def main_rows(summary: pd.DataFrame, scale: str = "1.0") -> pd.DataFrame:
    """Rows of the main table: default magnitudes, feedback `scale` (bp has none: always kept),
    no partial concordance."""
    keep = summary["feedback"] != "sc"
    if "feedback.scale" in summary:
        keep &= (summary["feedback.scale"] == scale) | (summary["feedback"] == "bp")
    if "feedback.magnitude" in summary:
        keep &= summary["feedback.magnitude"] == "uniform"
    return summary[keep]


def cell(summary: pd.DataFrame, **match) -> pd.Series | None:
    rows = summary
    for key, value in match.items():
        rows = rows[rows[key] == value]
    return None if rows.empty else rows.iloc[0]


def fmt(row) -> str:
    if row is None:
        return "n/a"
    diverged, finished = int(row["n_diverged"]), int(row["n"])
    if not finished:
        return f"diverged ({diverged} of {diverged} runs)"
    text = f"{row['error']:.2f} ± {row['std']:.2f}"
    return text + (f" ({diverged} of {diverged + finished} runs diverged)" if diverged else "")


def variant(row) -> str:
    """usf varies its scale, brsf/frsf the distribution of their magnitudes."""
    if row["feedback"] == "usf":
        return f"usf (scale {row.get('feedback.scale', '1.0')})"
    return f"{row['feedback']} (magnitude {row.get('feedback.magnitude', 'uniform')})"


def claim_magnitudes(summary: pd.DataFrame, dataset: str) -> tuple[str, list[str]]:
    rows = summary[
        (summary["dataset"] == dataset)
        & (summary["norm"] == "bn_bm")
        & summary["feedback"].isin(SIGN_CONCORDANT)
    ]
    rows = rows[rows["n"] > 0].sort_values(["feedback", "feedback.magnitude", "feedback.scale"])
    if rows.empty:
        return "not measured", []
    lines = [f"{variant(r)}: {fmt(r)}" for _, r in rows.iterrows()]
    spread = rows["error"].max() - rows["error"].min()
    verdict = (
        "holds"
        if spread <= POINT
        else ("roughly holds" if spread <= 2 * POINT else "does not hold")
    )
    return f"{verdict}: the {len(rows)} variants span {spread:.2f} points of test error", lines


def claim_signs(summary: pd.DataFrame, dataset: str) -> tuple[str, list[str]]:
    rows = summary[(summary["dataset"] == dataset) & (summary["feedback"] == "sc")]
    if rows.empty:
        return "not measured", []
    rows = rows[rows["n"] > 0]
    rows = rows.assign(p=rows["feedback.concordance"].astype(float)).sort_values("p")
    accuracy = 100 - rows["error"].to_numpy()
    lines = [
        f"{100 * p:.0f}% concordant signs: test error {fmt(r)}"
        for p, (_, r) in zip(rows["p"], rows.iterrows(), strict=True)
    ]
    reference = cell(summary[summary["norm"] == "bn_bm"], dataset=dataset, feedback="rndf")
    if reference is not None:
        lines.append(f"reference rndf (random feedback): {fmt(reference)}")
    flat = np.ptp(accuracy) == 0  # a constant series has no rank correlation: no trend
    rank = 0.0 if flat else pd.Series(accuracy).corr(pd.Series(rows["p"].to_numpy()), "spearman")
    steps = np.diff(accuracy)
    monotone = bool((steps >= -rows["std"].to_numpy()[1:]).all())
    rising = accuracy[-1] - accuracy[0]
    verdict = "holds" if rank > 0.8 and rising > POINT else "does not hold"
    detail = "rises monotonically (within one std)" if monotone else "rises, not monotonically"
    return (
        f"{verdict}: accuracy {detail} from {accuracy[0]:.2f}% at 0% to {accuracy[-1]:.2f}% at "
        f"100% concordance (Spearman {rank:.2f})",
        lines,
    )


def claim_match_bp(summary: pd.DataFrame, dataset: str) -> tuple[str, list[str]]:
    summary = main_rows(summary)
    lines, gaps = [], []
    for norm in STABILIZED:
        bp = cell(summary, dataset=dataset, feedback="bp", norm=norm)
        for rule in SIGN_CONCORDANT:
            row = cell(summary, dataset=dataset, feedback=rule, norm=norm)
            if bp is None or row is None or row["n_diverged"] or bp["n_diverged"]:
                continue
            gap = row["error"] - bp["error"]
            tolerance = max(POINT / 2, row["std"], bp["std"])
            gaps.append((gap, tolerance))
            lines.append(
                f"{rule} vs bp with {NORM_LABELS[norm]}: {row['error']:.2f} vs {bp['error']:.2f} "
                f"({gap:+.2f} points)"
            )
    if not gaps:
        return "not measured", lines
    matched = sum(gap <= tolerance for gap, tolerance in gaps)
    verdict = "holds" if matched == len(gaps) else ("partly holds" if matched else "does not hold")
    return (
        f"{verdict}: {matched} of {len(gaps)} sign-concordant conditions are within max(0.5 "
        "point, one std) of bp or better",
        lines,
    )


def claim_stabilization(
    summary: pd.DataFrame, dataset: str, scale: str = "1.0"
) -> tuple[str, list[str]]:
    """An asymmetric rule degrades without BN and BM when it diverges or ends more than a point
    worse than bp without them (the control: plain BP also gains from BN); it is restored when a
    stabilized condition trains without diverging. Rules at feedback `scale`."""
    summary = main_rows(summary, scale)
    bp_none = cell(summary, dataset=dataset, feedback="bp", norm="none")
    lines, degraded, restored, total = [], 0, 0, 0
    for rule in ("bp", *SIGN_CONCORDANT, "rndf"):
        none = cell(summary, dataset=dataset, feedback=rule, norm="none")
        stabilized = [cell(summary, dataset=dataset, feedback=rule, norm=n) for n in STABILIZED]
        trained = [r for r in stabilized if r is not None and r["n"] > 0 and not r["n_diverged"]]
        if none is None:
            continue
        best = min(trained, key=lambda r: r["error"]) if trained else None
        best_text = (
            f"best stabilized ({NORM_LABELS[best['norm']]}) {fmt(best)}"
            if best is not None
            else ("diverged or missing under every stabilization")
        )
        lines.append(f"{rule}: none {fmt(none)}; {best_text}")
        if rule != "bp":
            total += 1
            worse = (
                none["n"] > 0 and bp_none is not None and none["error"] - bp_none["error"] > POINT
            )
            degraded += bool(none["n_diverged"] > 0 or worse)
            restored += best is not None
    if not total:
        return "not measured", lines
    holds = degraded == total and restored == total
    verdict = "holds" if holds else ("partly holds" if degraded else "does not hold")
    return (
        f"{verdict}: {degraded} of {total} asymmetric rules diverge or end more than 1 point "
        f"worse than bp without BN and BM; {restored} of {total} train with BN and/or BM",
        lines,
    )


#: Claim 4 is judged per feedback scale: the paper's unit magnitudes, and biotorch's init std.
SCALES = {"1.0": "unit magnitudes (the paper's)", "init_std": "scale=init_std (biotorch's)"}


def claim_stabilization_by_scale(summary: pd.DataFrame, dataset: str) -> tuple[str, list[str]]:
    """Claim 4 once per feedback scale the dataset's asymmetric runs without BN/BM use (unit
    alone: as claim_stabilization)."""
    rows = summary[
        (summary["dataset"] == dataset)
        & (summary["feedback"] != "bp")
        & (summary["norm"] == "none")
    ]
    used = set(rows["feedback.scale"]) if "feedback.scale" in rows else {"1.0"}
    scales = [scale for scale in SCALES if scale in used]
    if scales in ([], ["1.0"]):
        return claim_stabilization(summary, dataset)
    verdicts, lines = [], []
    for scale in scales:
        verdict, found = claim_stabilization(summary, dataset, scale)
        verdicts.append(f"{SCALES[scale]}: {verdict}")
        lines += [f"{SCALES[scale]}: {line}" for line in found]
    return "; ".join(verdicts), lines


CLAIMS = (
    ("1. The magnitudes of the feedback weights do not matter (BN+BM)", claim_magnitudes),
    ("2. The signs matter: accuracy rises with the fraction of concordant signs", claim_signs),
    ("3. With 100% concordant signs and BN/BM, error matches or beats bp", claim_match_bp),
    (
        "4. Without BN and BM asymmetric BP degrades or diverges; BN/BM restore it",
        claim_stabilization_by_scale,
    ),
)


def biotorch_line(summary: pd.DataFrame) -> str:
    row = cell(main_rows(summary), dataset="fashion_mnist", feedback="usf", norm="bn_bm")
    if row is None:
        return ""
    gap = row["error"] - BIOTORCH_USF_FASHION
    return (
        f"Fashion-MNIST, usf with BN+BM: {fmt(row)}% test error against biotorch's published "
        f"{BIOTORCH_USF_FASHION}% (LeNet, 100 epochs, full training set): "
        + (
            "at or below it."
            if gap <= 0
            else f"{gap:.2f} points above it, with this profile's "
            "reduced budget (see the conditions above)."
        )
    )


def render(report: Path, out: Path, command: str) -> str:
    summary = load(report)
    datasets = sorted(summary["dataset"].unique())
    runs = pd.read_csv(report / RUNS_CSV)
    conditions = (
        runs.groupby("dataset")[["epochs", "train_subset", "seed"]]
        .agg({"epochs": "max", "train_subset": "max", "seed": "nunique"})
        .rename(columns={"seed": "seeds"})
    )
    status = runs["status"].value_counts().to_dict()
    parts = [
        "# Results: the paper's four claims on digits and Fashion-MNIST",
        "",
        "Generated by `scripts/write_results.py` from the aggregated report; do not edit by hand.",
        "Regenerate with:",
        "",
        "```bash",
        command,
        "```",
        "",
        f"Runs: {len(runs)} ({', '.join(f'{v} {k}' for k, v in sorted(status.items()))}). "
        "Test error in percent, mean ± sample std over seeds, at the last epoch.",
        "",
        conditions.reset_index().to_markdown(index=False),
        "",
        "## Verdicts",
        "",
    ]
    for title, judge in CLAIMS:
        parts += [f"### {title}", ""]
        for dataset in datasets:
            verdict, lines = judge(summary, dataset)
            parts.append(f"- **{dataset}**: {verdict}.")
            parts += [f"    - {line}" for line in lines]
        parts.append("")
    line = biotorch_line(summary)
    if line:
        parts += ["### Against biotorch", "", line, ""]
    anchors = report / ANCHORS_MD
    if anchors.exists():  # headings one level down, under this section
        text = anchors.read_text().strip().replace("\n## ", "\n### ").replace("## ", "### ", 1)
        parts += ["## Published numbers side by side", "", text, ""]
    parts += ["## The paper's table", "", (report / TABLE_MD).read_text().strip(), ""]
    figures = out / "results"
    figures.mkdir(parents=True, exist_ok=True)
    parts += ["## Figures", ""]
    for png in sorted(report.glob("fig_*.png")):
        shutil.copyfile(png, figures / png.name)
        parts += [f"![{png.stem}](results/{png.name})", ""]
    return "\n".join(parts)


#: RESULTS.md's text from this line on is not the claims' and survives regeneration.
KEPT = "<!-- write_results.py keeps everything below this line -->"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="write_results.py", description="Write RESULTS.md: the claims' verdicts from a report."
    )
    parser.add_argument("report", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument(
        "--command",
        default="python scripts/reproduce_paper.py --profile cpu\n"
        "python scripts/write_results.py outputs/reproduce_cpu/report --out docs",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "RESULTS.md"
    # Sections after the KEPT marker come from other studies (e.g. rule_families) and are kept.
    old = results.read_text() if results.exists() else ""
    kept = old[old.index(KEPT) :] if KEPT in old else ""
    results.write_text(render(args.report, args.out, args.command) + ("\n" + kept if kept else ""))
    print(f"wrote {args.out / 'RESULTS.md'}")
    return 0

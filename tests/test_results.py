"""asymbp.report.claims (scripts/write_results.py): verdicts on the paper's claims from a report
with known numbers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from asymbp.report import claims as write_results

COLUMNS = ["dataset", "feedback", "norm", "feedback.concordance", "feedback.magnitude",
           "feedback.scale", "test_error_mean", "test_error_std", "n", "n_diverged"]  # fmt: skip


def condition(feedback, norm, error, std=0.002, concordance=None, magnitude=None, scale=None,
              n=3, diverged=0):  # fmt: skip
    return ["toy", feedback, norm, concordance, magnitude, scale, error, std, n, diverged]


def write_report(tmp_path: Path, rows: list[list]) -> Path:
    report = tmp_path / "report"
    report.mkdir()
    pd.DataFrame(rows, columns=COLUMNS).to_csv(report / "summary.csv", index=False)
    pd.DataFrame(
        {"dataset": ["toy"] * 3, "epochs": [4] * 3, "train_subset": [400] * 3, "seed": [0, 1, 2],
         "status": ["done", "done", "diverged"]}
    ).to_csv(report / "runs.csv", index=False)  # fmt: skip
    (report / "table_paper.md").write_text("| rule | stabilization | toy |\n|---|---|---|\n")
    (report / "fig_concordance.png").write_bytes(b"\x89PNG fake")
    return report


def paper_like(tmp_path) -> Path:
    rows = [
        condition("bp", "none", 0.100),
        condition("usf", "none", 0.300),
        condition("brsf", "none", 0.250),
        condition("frsf", "none", 0.400),
        condition("rndf", "none", 0.9, n=0, diverged=3),
    ]
    for norm, base in (("bn", 0.080), ("bm", 0.090), ("bn_bm", 0.070)):
        rows += [condition("bp", norm, base), condition("rndf", norm, base + 0.05)]
        rows += [condition(r, norm, base + 0.002, scale=1.0) for r in ("usf",)]
        rows += [condition(r, norm, base - 0.001, magnitude="uniform") for r in ("brsf", "frsf")]
    rows += [condition("usf", "bn_bm", 0.074, scale="init_std")]
    rows += [condition(r, "bn_bm", 0.075, magnitude="half_normal") for r in ("brsf", "frsf")]
    rows += [
        condition("sc", "bn_bm", error, concordance=p)
        for p, error in ((0.0, 0.60), (0.25, 0.20), (0.5, 0.12), (0.75, 0.09), (1.0, 0.072))
    ]
    return write_report(tmp_path, rows)


def test_the_four_verdicts_follow_the_numbers(tmp_path):
    report = paper_like(tmp_path)
    text = write_results.render(report, tmp_path / "docs", "make it so")
    summary = write_results.load(report)
    magnitudes, lines = write_results.claim_magnitudes(summary, "toy")
    assert magnitudes.startswith("holds: the 6 variants span 0.60 points")  # 7.50 - 6.90
    assert "usf (scale init_std): 7.40 ± 0.20" in lines
    signs, lines = write_results.claim_signs(summary, "toy")
    assert signs.startswith("holds: accuracy rises monotonically") and "40.00% at 0%" in signs
    assert lines[-1] == "reference rndf (random feedback): 12.00 ± 0.20"
    match, _ = write_results.claim_match_bp(summary, "toy")
    assert match.startswith("holds: 9 of 9")
    stabilization, lines = write_results.claim_stabilization(summary, "toy")
    assert stabilization.startswith("holds: 4 of 4 asymmetric rules")
    assert "rndf: none diverged (3 of 3 runs); best stabilized (BN+BM) 12.00 ± 0.20" in lines
    assert "make it so" in text and "![fig_concordance](results/fig_concordance.png)" in text
    assert (tmp_path / "docs" / "results" / "fig_concordance.png").exists()


def test_negative_results_are_reported_as_such(tmp_path):
    rows = [
        condition("bp", "bn_bm", 0.05),
        condition("usf", "bn_bm", 0.10, scale=1.0),
        condition("frsf", "bn_bm", 0.13, magnitude="uniform"),
        condition("sc", "bn_bm", 0.10, concordance=0.0),
        condition("sc", "bn_bm", 0.10, concordance=1.0),
    ]
    summary = write_results.load(write_report(tmp_path, rows))
    assert write_results.claim_magnitudes(summary, "toy")[0].startswith("does not hold: ")
    assert write_results.claim_signs(summary, "toy")[0].startswith("does not hold: ")
    assert write_results.claim_match_bp(summary, "toy")[0].startswith("does not hold: 0 of 2")
    assert write_results.claim_stabilization(summary, "toy")[0] == "not measured"


@pytest.mark.parametrize(
    "error, expected", [(0.09, "at or below it."), (0.12, "2.31 points above")]
)
def test_biotorch_comparison_line(tmp_path, error, expected):
    rows = [condition("usf", "bn_bm", error, scale=1.0)]
    rows[0][0] = "fashion_mnist"
    summary = write_results.load(write_report(tmp_path, rows))
    assert expected in write_results.biotorch_line(summary)


def test_stabilization_claim_compares_with_bp_without_stabilization(tmp_path):
    rows = [
        condition("bp", "none", 0.015),
        condition("usf", "none", 0.015, scale=1.0),  # as good as bp: not degraded
        condition("rndf", "none", 0.9, n=0, diverged=3, magnitude="uniform"),
        condition("bp", "bn_bm", 0.003),
        condition("usf", "bn_bm", 0.003, scale=1.0),
        condition("rndf", "bn_bm", 0.9, n=0, diverged=3, magnitude="uniform"),
    ]
    summary = write_results.load(write_report(tmp_path, rows))
    verdict, lines = write_results.claim_stabilization(summary, "toy")
    assert verdict.startswith("partly holds: 1 of 2 asymmetric rules diverge")
    assert "0 of 2 train with BN and/or BM" not in verdict and "1 of 2 train" in verdict
    assert lines[-1] == (
        "rndf: none diverged (3 of 3 runs); diverged or missing under every stabilization"
    )


def test_regenerating_keeps_the_sections_below_the_marker(tmp_path):
    report = paper_like(tmp_path)
    docs = tmp_path / "docs"
    assert write_results.main([str(report), "--out", str(docs), "--command", "c"]) == 0
    first = (docs / "RESULTS.md").read_text()
    hand = f"{write_results.KEPT}\n\n## Rule families\n\nkept text\n"
    (docs / "RESULTS.md").write_text(first + "\n" + hand)
    assert write_results.main([str(report), "--out", str(docs), "--command", "c"]) == 0
    again = (docs / "RESULTS.md").read_text()
    assert again.startswith(first) and again.endswith(hand) and again.count("kept text") == 1


def test_stabilization_claim_split_by_feedback_scale(tmp_path):
    # Unit-magnitude usf diverges without BN/BM; biotorch's init_std-scaled usf trains there as
    # well as bp: the claim holds for the paper's usf and not for biotorch's.
    rows = [
        condition("bp", "none", 0.10),
        condition("usf", "none", 0.9, n=0, diverged=3, scale=1.0),
        condition("usf", "none", 0.10, scale="init_std"),
        condition("bp", "bn_bm", 0.09),
        condition("usf", "bn_bm", 0.09, scale=1.0),
        condition("usf", "bn_bm", 0.09, scale="init_std"),
    ]
    summary = write_results.load(write_report(tmp_path, rows))
    verdict, lines = write_results.claim_stabilization_by_scale(summary, "toy")
    assert verdict == (
        "unit magnitudes (the paper's): holds: 1 of 1 asymmetric rules diverge or end more than "
        "1 point worse than bp without BN and BM; 1 of 1 train with BN and/or BM; "
        "scale=init_std (biotorch's): does not hold: 0 of 1 asymmetric rules diverge or end more "
        "than 1 point worse than bp without BN and BM; 1 of 1 train with BN and/or BM"
    )
    assert (
        "scale=init_std (biotorch's): usf: none 10.00 ± 0.20; best stabilized (BN+BM) 9.00 ± 0.20"
        in lines
    )
    # Without init_std runs without BN/BM, claim 4 is judged once, as before.
    (tmp_path / "paper").mkdir()
    paper = write_results.load(paper_like(tmp_path / "paper"))
    assert write_results.claim_stabilization_by_scale(paper, "toy") == (
        write_results.claim_stabilization(paper, "toy")
    )

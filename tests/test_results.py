"""asymbp.report.claims (scripts/write_results.py): verdicts on the paper's claims from a report
with known numbers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from asymbp.report import claims as write_results
from asymbp.report.anchors import compare_all, load_anchors

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
    # per stabilization; with BN+BM six variants span 7.50 - 6.90
    assert "BN+BM: holds: the 6 distinct variants span 0.60 points" in magnitudes
    assert magnitudes.startswith("none: does not hold: the 3 distinct variants span 15.00")
    assert "BN+BM: usf (scale init_std): 7.40 ± 0.20" in lines
    signs, lines = write_results.claim_signs(summary, "toy")
    assert signs.startswith("holds: accuracy rises beyond the seeds' spread at every step")
    assert "40.00% at 0%" in signs and "(5 levels" in signs
    assert lines[-1] == "reference rndf (random feedback): 12.00 ± 0.20"
    match, lines = write_results.claim_match_bp(summary, "toy")
    # brsf/frsf uniform are 0.1 below bp everywhere (inside the spread, 0.28): they match, never
    # beat; half-normal ones are 0.5 above bp with BN+BM: worse
    assert match.startswith("partly holds: 6 of 8 random-magnitude conditions match or beat bp")
    assert "(0 beat it beyond the seeds' spread)" in match
    assert "2 of 8 match or beat bp's best condition (BN+BM)" in match
    assert not any("usf" in line for line in lines)  # claim 3 is about random magnitudes
    stabilization, lines = write_results.claim_stabilization(summary, "toy")
    assert stabilization.startswith("holds: 4 of 4 asymmetric rules")
    assert "rndf (BN, BM, BN+BM); not better with any: none" in stabilization
    assert "rndf: none diverged (3 of 3 runs); BN 13.00 ± 0.20; BM 14.00 ± 0.20; " in lines[-1]
    assert "make it so" in text and "![fig_concordance](results/fig_concordance.png)" in text
    assert (tmp_path / "docs" / "results" / "fig_concordance.png").exists()


def test_negative_results_are_reported_as_such(tmp_path):
    rows = [
        condition("bp", "bn_bm", 0.05),
        condition("usf", "bn_bm", 0.10, scale=1.0),
        condition("frsf", "bn_bm", 0.13, magnitude="uniform"),
        *(condition("sc", "bn_bm", 0.10, concordance=p) for p in (0.0, 0.25, 0.5, 0.75, 1.0)),
    ]
    summary = write_results.load(write_report(tmp_path, rows))
    assert write_results.claim_magnitudes(summary, "toy")[0].startswith("BN+BM: does not hold: ")
    assert write_results.claim_signs(summary, "toy")[0].startswith("does not hold: ")
    assert write_results.claim_match_bp(summary, "toy")[0].startswith("does not hold: 0 of 1")
    assert write_results.claim_stabilization(summary, "toy")[0] == "not measured"


def test_variants_that_are_the_same_computation_count_once(tmp_path):
    # Under sign-of-gradient BM, uSF at scale 1 and init_std is one computation, whatever the
    # numbers say; brsf and frsf whose runs are identical seed by seed are counted once too.
    rows = [
        condition("usf", "bn_bm", 0.070, scale=1.0),
        condition("usf", "bn_bm", 0.071, scale="init_std"),
        condition("brsf", "bn_bm", 0.075, magnitude="uniform"),
        condition("frsf", "bn_bm", 0.075, magnitude="uniform"),
    ]
    summary = write_results.load(write_report(tmp_path, rows))
    summary = summary.assign(**{"norm.sign_of": "gradient", "norm.scope": "all"})
    same = ((0, 0.25, 0.9, 0.925), (1, 0.26, 0.9, 0.925))
    summary["fingerprint"] = [((0, 0.1, 0.9, 0.93),), ((0, 0.2, 0.9, 0.93),), same, same]
    verdict, lines = write_results.claim_magnitudes(summary, "toy")
    assert verdict == "BN+BM: holds: the 2 distinct variants span 0.50 points of test error"
    assert (
        "BN+BM: usf (scale 1.0) = usf (scale init_std): the same computation (by construction: "
        "a constant scale vanishes in Batch Manhattan's sign), counted once" in lines
    )
    assert any("brsf (magnitude uniform) = frsf (magnitude uniform): the same computation "
               "(identical histories, seed by seed)" in line for line in lines)  # fmt: skip
    # under sign-of-update BM the two scales are different computations (weight decay competes
    # with gradients of their own size): counted twice
    update = summary.assign(**{"norm.sign_of": "update", "fingerprint": None})
    assert write_results.claim_magnitudes(update, "toy")[0].startswith(
        "BN+BM: holds: the 4 distinct variants"
    )
    alone = summary[summary["feedback"] == "usf"]
    assert write_results.claim_magnitudes(alone, "toy")[0] == (
        "BN+BM: not measured (one distinct variant)"
    )


def test_three_concordance_levels_are_refused_as_evidence_of_monotonicity(tmp_path):
    levels = ((0.0, 0.6), (0.5, 0.2), (1.0, 0.1))
    rows = [condition("sc", "bn_bm", e, concordance=p) for p, e in levels]
    summary = write_results.load(write_report(tmp_path, rows))
    verdict, lines = write_results.claim_signs(summary, "toy")
    assert verdict.startswith("not tested: 3 concordance levels; at least 0, 0.25, 0.5, 0.75, 1")
    assert len(lines) == 3


def test_a_fall_beyond_the_spread_breaks_monotonicity_and_a_small_one_does_not(tmp_path):
    errors = {0.0: 0.60, 0.25: 0.20, 0.5: 0.12, 0.75: 0.091, 1.0: 0.092}  # 0.1 point up at 100%
    rows = [condition("sc", "bn_bm", e, concordance=p) for p, e in errors.items()]
    summary = write_results.load(write_report(tmp_path, rows))
    verdict, _ = write_results.claim_signs(summary, "toy")
    assert verdict.startswith("holds: accuracy never falls beyond the seeds' spread (3 of 4 steps")
    errors[1.0] = 0.12  # 2.9 points worse than at 75%, std 0.2 each: beyond the spread
    rows = [condition("sc", "bn_bm", e, concordance=p) for p, e in errors.items()]
    (tmp_path / "b").mkdir()
    summary = write_results.load(write_report(tmp_path / "b", rows))
    verdict, _ = write_results.claim_signs(summary, "toy")
    assert verdict.startswith("does not hold: accuracy falls beyond the seeds' spread at 75->100%")


def test_beats_inside_one_std_is_refused(tmp_path):
    rows = [
        condition("bp", "bn_bm", 0.100, std=0.004),
        condition("brsf", "bn_bm", 0.097, std=0.004, magnitude="uniform"),  # -0.3, spread 0.57
        condition("frsf", "bn_bm", 0.090, std=0.004, magnitude="uniform"),  # -1.0: beyond it
        condition("brsf", "bn", 0.090, std=0.004, magnitude="uniform", n=1),  # one seed
        condition("bp", "bn", 0.100, std=0.004),
    ]
    summary = write_results.load(write_report(tmp_path, rows))
    verdict, lines = write_results.claim_match_bp(summary, "toy")
    assert verdict.startswith("partly holds: 2 of 3 random-magnitude conditions match or beat bp")
    assert "(1 beat it beyond the seeds' spread)" in verdict
    assert any(line.startswith("brsf (magnitude uniform) with BN+BM: 9.70 ± 0.40 matches bp")
               for line in lines)  # fmt: skip
    assert any(line.startswith("frsf (magnitude uniform) with BN+BM: 9.00 ± 0.40 beats bp")
               for line in lines)  # fmt: skip
    assert any("undecided (fewer than 2 seeds) bp with BN" in line for line in lines)


# (rule, norm, scale, lr) -> per seed (val_acc, test_acc, best_val_acc, test_acc_at_best_val),
# on biotorch's Fashion-MNIST cells (bp 9.20, uSF 9.69, frSF 9.61 % error).
# usf none: at the last epoch lr 0.05 validates better (test error 15%); at the best validation
# epoch lr 0.01 does (test error 10.00%, +0.31 over 9.69: within 0.5, target met).
# usf BN+BM: 9.80%, +0.11 over 9.69: the paper's condition must be at or below it, so missed.
# frsf none: 10.50%, +0.89 over 9.61: missed by 0.39. bp: 9.00, a reference within tolerance.
# rndf: every seed diverged: no finished run.
TARGET_RUNS = {
    ("usf", "none", "init_std", 0.01): (0.90, 0.850, 0.91, 0.900),
    ("usf", "none", "init_std", 0.05): (0.92, 0.850, 0.905, 0.880),
    ("usf", "bn_bm", "init_std", 0.01): (0.90, 0.900, 0.91, 0.902),
    ("frsf", "none", "init_std", 0.01): (0.90, 0.895, 0.91, 0.895),
    ("bp", "none", None, 0.01): (0.93, 0.910, 0.93, 0.910),
    ("rndf", "none", "init_std", 0.01): None,
}


def target_runs() -> pd.DataFrame:
    rows = []
    for (rule, norm, scale, lr), values in TARGET_RUNS.items():
        for seed in (0, 1):
            val, test, best_val, test_at_best = values or (float("nan"),) * 4
            rows.append({
                "run": f"{rule}-{norm}-{lr}-{seed}", "status": "done" if values else "diverged",
                "reason": "", "dataset": "fashion_mnist", "model": "lenet5", "feedback": rule,
                "norm": norm, "optimizer": "sgd", "seed": seed, "feedback.scale": scale,
                "optimizer.lr": lr, "val_acc": val, "test_acc": test, "best_val_acc": best_val,
                "test_acc_at_best_val": test_at_best, "epochs": 24,
            })  # fmt: skip
    return pd.DataFrame(rows)


def test_targets_against_biotorch_known_verdicts():
    table = write_results.targets(target_runs(), ("optimizer.lr",))
    found = {(r["feedback"], r["norm"]): r for r in table.to_dict("records")}
    usf = found[("usf", "none")]
    assert usf["selected"] == "optimizer.lr=0.01"  # chosen at the best validation epoch
    assert usf["best validation epoch"] == "10.00 ± 0.00" and usf["biotorch"] == "9.69"
    assert usf["last epoch"] == "15.00 ± 0.00"  # lr 0.05 wins at the last epoch
    assert (usf["difference"], usf["target"]) == ("+0.31", "met")
    assert found[("usf", "BN+BM")]["target"] == "missed (+0.11 over)"
    assert found[("frsf", "none")]["target"] == "missed (+0.39 over)"
    assert found[("bp", "none")]["target"] == "reference (within tolerance)"
    assert found[("rndf", "none")]["target"] == "no finished run"
    assert "Targets met: 1 of 3 sign-concordant" in write_results.targets_markdown(table)


def test_targets_need_matching_runs():
    runs = target_runs().assign(dataset="digits")  # no biotorch cell for digits
    assert write_results.targets(runs).empty
    assert write_results.targets(pd.DataFrame({"dataset": ["toy"], "status": ["done"]})).empty


def test_claim_3_is_judged_per_feedback_scale(tmp_path):
    rows = [
        condition("bp", "bn_bm", 0.10),
        condition("usf", "bn_bm", 0.10, scale="init_std"),
        condition("frsf", "bn_bm", 0.13, scale="init_std", magnitude="uniform"),
    ]
    summary = write_results.load(write_report(tmp_path, rows))
    verdict, lines = write_results.claim_match_bp(summary, "toy")
    assert verdict.startswith(
        "scale=init_std: does not hold: 0 of 1 random-magnitude conditions match or beat bp"
    )
    assert lines[0].startswith(
        "scale=init_std: frsf (magnitude uniform, scale init_std) with BN+BM: 13.00 ± 0.20 is "
        "worse than bp with BN+BM (10.00 ± 0.20, +3.00 points)"
    )


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
    # usf is better with BN+BM than without; rndf diverges with and without
    assert verdict.endswith("(beyond the seeds' spread): usf (BN+BM); not better with any: rndf")
    assert lines[-1] == "rndf: none diverged (3 of 3 runs); BN+BM diverged (3 of 3 runs)"


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
    better = "better with a stabilization than without (beyond the seeds' spread): usf (BN+BM)"
    assert verdict == (
        "unit magnitudes (the paper's): holds: 1 of 1 asymmetric rules diverge or end more than "
        f"1 point worse than bp without BN and BM; {better}; not better with any: none; "
        "scale=init_std: does not hold: 0 of 1 asymmetric rules diverge or end more "
        f"than 1 point worse than bp without BN and BM; {better}; not better with any: none"
    )
    assert "scale=init_std: usf: none 10.00 ± 0.20; BN+BM 9.00 ± 0.20" in lines
    # Without init_std runs without BN/BM, claim 4 is judged once, as before.
    (tmp_path / "paper").mkdir()
    paper = write_results.load(paper_like(tmp_path / "paper"))
    assert write_results.claim_stabilization_by_scale(paper, "toy") == (
        write_results.claim_stabilization(paper, "toy")
    )


def test_published_side_by_side_shows_only_the_cells_run(tmp_path):
    summary = pd.DataFrame([{
        "dataset": "fashion_mnist", "model": "lenet5", "feedback": "bp", "norm": "none",
        "optimizer": "sgd", "test_error_mean": 0.093, "test_error_std": 0.001, "n": 3,
        "n_diverged": 0,
    }])  # fmt: skip
    anchors = load_anchors()
    table = compare_all({"final": summary, "best_val": summary}, anchors)
    (tmp_path / "anchors.csv").write_text(table.to_csv(index=False))
    text = write_results.published_side_by_side(tmp_path)
    rows = [line for line in text.splitlines() if line.startswith("| biotorch")]
    assert len(rows) == 2  # one per metric: the Fashion-MNIST bp cell, the only one run
    assert all(
        "fashion_mnist" in row and "+0.10" in row and "within tolerance" in row for row in rows
    )
    assert "### Test error at the last epoch" in text and "\n## " not in text
    assert f"Not run here: {len(anchors) - 1} published cells" in text


def test_stabilization_claim_says_what_was_not_run_with_bn_bm(tmp_path):
    # Unit usf diverges without BN/BM and was never run with them: degraded, not "not restored".
    rows = [
        condition("bp", "none", 0.10),
        condition("usf", "none", 0.9, n=0, diverged=3, scale=1.0),
        condition("bp", "bn_bm", 0.09),
    ]
    summary = write_results.load(write_report(tmp_path, rows))
    verdict, lines = write_results.claim_stabilization(summary, "toy")
    assert verdict == (
        "partly holds: 1 of 1 asymmetric rules diverge or end more than 1 point worse than bp "
        "without BN and BM; better with a stabilization than without (beyond the seeds' spread): "
        "none; not better with any: none; 1 not run with BN/BM at this scale"
    )
    assert lines[-1] == "usf: none diverged (3 of 3 runs); not run with BN or BM at this scale"


def test_a_reports_robustness_table_becomes_a_section(tmp_path):
    report = paper_like(tmp_path)
    assert "## Adversarial robustness" not in write_results.render(report, tmp_path / "d", "c")
    table = "Test accuracy (%) under attack ...\n\n### PGD on toy (none; settings abc)\n\n| x |\n"
    (report / "table_robustness.md").write_text(table)
    text = write_results.render(report, tmp_path / "d", "c")
    section = text[text.index("## Adversarial robustness") :]
    assert "#### PGD on toy" in section and section.index("#### PGD") < section.index("## Figures")

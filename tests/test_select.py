"""--select: per condition, the swept value with the best mean validation accuracy wins and the
test error is read there (known inputs, known winners), never chosen on the test set."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_anchors import run_main

from asymbp.report.example import write_sweep
from asymbp.report.select import NO_WINNER, select_summary

# (rule, lr) -> per seed (val_acc, test_acc, best_val_acc, test_acc_at_best_val).
# usf: lr 0.01 has the better validation mean (0.94 vs 0.91) but the worse test accuracy: the
# winner must be 0.01 (test error 29%), which a choice on the test set would not give. At the
# best validation epoch lr 0.1 wins instead (0.99 vs 0.95): test error there 1 - 0.85 = 15%.
# bp: lr 0.1 wins at both epochs (0.97 vs 0.96): test error (3% + 5%) / 2 = 4%.
# rndf: nothing finished (diverged), so no value wins: the condition is kept with n = 0.
RUNS = {
    ("usf", 0.1): [(0.90, 0.80, 0.99, 0.85), (0.92, 0.82, 0.99, 0.85)],
    ("usf", 0.01): [(0.95, 0.70, 0.95, 0.75), (0.93, 0.72, 0.95, 0.75)],
    ("bp", 0.1): [(0.97, 0.97, 0.97, 0.97), (0.97, 0.95, 0.97, 0.95)],
    ("bp", 0.01): [(0.96, 0.99, 0.96, 0.99), (0.96, 0.99, 0.96, 0.99)],
    ("rndf", 0.1): [None, None],
    ("rndf", 0.01): [None, None],
}


def make_runs(with_validation: bool = True) -> pd.DataFrame:
    rows = []
    for (rule, lr), seeds in RUNS.items():
        for seed, values in enumerate(seeds):
            val, test, best_val, test_at_best = values or (np.nan,) * 4
            rows.append({
                "run": f"{rule}-{lr}-{seed}", "status": "done" if values else "diverged",
                "reason": "", "dataset": "digits", "model": "mlp", "feedback": rule,
                "norm": "none", "optimizer": "sgd", "seed": seed, "test_acc": test,
                "val_acc": val if with_validation else np.nan,
                "best_val_acc": best_val if with_validation else np.nan,
                "test_acc_at_best_val": test_at_best, "epochs": 3, "optimizer.lr": lr,
            })  # fmt: skip
    return pd.DataFrame(rows)


def by_rule(summary: pd.DataFrame) -> dict[str, dict]:
    return {row["feedback"]: row for row in summary.to_dict("records")}


def test_winner_is_chosen_on_validation_not_test():
    rows = by_rule(select_summary(make_runs(), "final", ["optimizer.lr"]))
    assert rows["usf"]["optimizer.lr"] == 0.01 and rows["usf"]["selected"] == "optimizer.lr=0.01"
    assert rows["usf"]["test_error_mean"] == pytest.approx(0.29)
    assert rows["usf"]["n"] == 2
    assert rows["bp"]["optimizer.lr"] == 0.1
    assert rows["bp"]["test_error_mean"] == pytest.approx(0.04)


def test_best_val_metric_selects_on_best_validation_epoch():
    rows = by_rule(select_summary(make_runs(), "best_val", ["optimizer.lr"]))
    assert rows["usf"]["selected"] == "optimizer.lr=0.1"
    assert rows["usf"]["test_error_mean"] == pytest.approx(0.15)


def test_condition_without_finished_run_has_no_winner():
    summary = select_summary(make_runs(), "final", ["optimizer.lr"])
    rndf = summary[summary["feedback"] == "rndf"]
    assert len(rndf) == 1
    assert rndf.iloc[0]["selected"] == NO_WINNER and rndf.iloc[0]["n"] == 0
    assert rndf.iloc[0]["n_diverged"] == 2


def test_selected_names_only_the_keys_swept_in_that_condition():
    # Without BM only optimizer.lr is swept (bm_lr stays at its default); with BN+BM only bm_lr
    # is (lr at its default): each condition's `selected` names its own swept key, nothing else.
    plain = make_runs().assign(**{"optimizer.bm_lr": 0.0005})
    bm = [
        {**plain.iloc[0].to_dict(), "run": f"bm-{bm_lr}-{seed}", "norm": "bn_bm", "seed": seed,
         "optimizer.lr": 0.01, "optimizer.bm_lr": bm_lr, "val_acc": val, "test_acc": 0.9}
        for bm_lr, val in ((0.0001, 0.96), (0.0005, 0.94)) for seed in (0, 1)
    ]  # fmt: skip
    runs = pd.concat([plain, pd.DataFrame(bm)], ignore_index=True)
    summary = select_summary(runs, "final", ["optimizer.lr", "optimizer.bm_lr"])
    selected = {(r["feedback"], r["norm"]): r["selected"] for r in summary.to_dict("records")}
    assert selected[("usf", "none")] == "optimizer.lr=0.01"
    assert selected[("bp", "none")] == "optimizer.lr=0.1"
    assert selected[("usf", "bn_bm")] == "optimizer.bm_lr=0.0001"
    assert selected[("rndf", "none")] == NO_WINNER


def test_refuses_runs_without_validation():
    with pytest.raises(ValueError, match="needs a validation split.*val_fraction > 0"):
        select_summary(make_runs(with_validation=False), "final", ["optimizer.lr"])


def test_refuses_unknown_key():
    with pytest.raises(ValueError, match="unknown config key"):
        select_summary(make_runs(), "final", ["optimizer.nope"])


def test_cli_select_writes_winner_column_and_cells(tmp_path):
    sweep = write_sweep(tmp_path / "runs")
    out = tmp_path / "agg"
    code, stdout, stderr = run_main(sweep, "--out", out, "--select", "optimizer.lr", "--no-figures")
    assert code == 0, stderr
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False)
    # The fixture trains every condition at one learning rate: there is nothing to choose, so
    # `selected` is empty (a condition with no finished run says so) and no cell is tagged.
    assert summary["optimizer.lr"].nunique() == 1
    assert set(summary["selected"]) == {"", NO_WINNER}
    assert (summary.loc[summary["n"] > 0, "selected"] == "").all()
    assert "[optimizer.lr=" not in stdout
    code, _, stderr = run_main(sweep, "--out", out, "--select", "optimizer.nope", "--no-figures")
    assert code == 2 and stderr.count("\n") == 1 and "unknown config key" in stderr


def test_figures_draw_only_the_selected_runs_with_short_labels():
    from asymbp.report.figures import figure_runs

    runs = make_runs()
    # a second usf scale and brsf whose scale never varies: labels name only what varies per rule
    extra = runs[runs["feedback"] == "usf"].assign(run=lambda f: f["run"] + "-s")
    scales = ["1.0" if rule == "usf" else None for rule in runs["feedback"]]
    runs = runs.assign(**{"feedback.scale": scales})
    extra = extra.assign(**{"feedback.scale": "init_std"})
    brsf = runs[runs["feedback"] == "bp"].assign(
        feedback="brsf", run=lambda f: f["run"] + "-b", **{"feedback.scale": "init_std"}
    )
    runs = pd.concat([runs, extra, brsf], ignore_index=True)
    drawn, _ = figure_runs(runs, "final", select=["optimizer.lr"])
    finished = drawn[drawn["status"] == "done"]
    usf = finished[finished["feedback"] == "usf"]
    assert set(usf["optimizer.lr"]) == {0.01}  # the validation winner only (test says 0.1)
    assert set(finished.loc[finished["feedback"] == "bp", "optimizer.lr"]) == {0.1}
    # a feedback option is named by its value where it is not the rule's default (scale 1.0)
    assert set(usf["series"]) == {"usf", "usf, init_std"}
    assert set(finished.loc[finished["feedback"] == "brsf", "series"]) == {"brsf"}
    everything, _ = figure_runs(runs, "final")
    assert set(everything.loc[everything["feedback"] == "usf", "optimizer.lr"]) == {0.01, 0.1}


def test_a_value_at_which_seeds_diverge_loses_to_a_stable_one():
    # lr 0.003: one seed finished with the best validation accuracy of all (0.90), two diverged;
    # lr 0.001: three seeds finish at 0.85. Diverged runs count as 0: 0.30 < 0.85, so 0.001 wins.
    rows = []
    for lr, outcomes in ((0.003, [0.90, None, None]), (0.001, [0.85, 0.85, 0.85])):
        for seed, val in enumerate(outcomes):
            test = val - 0.01 if val else np.nan
            rows.append({
                "run": f"rndf-{lr}-{seed}", "status": "done" if val else "diverged",
                "reason": "", "dataset": "fashion_mnist", "model": "lenet5", "feedback": "rndf",
                "norm": "none", "optimizer": "sgd", "seed": seed, "test_acc": test,
                "val_acc": val or np.nan, "best_val_acc": val or np.nan,
                "test_acc_at_best_val": test, "epochs": 3, "optimizer.lr": lr,
            })  # fmt: skip
    (row,) = select_summary(pd.DataFrame(rows), "best_val", ["optimizer.lr"]).to_dict("records")
    assert row["selected"] == "optimizer.lr=0.001" and row["n"] == 3
    assert row["test_error_mean"] == pytest.approx(0.16)

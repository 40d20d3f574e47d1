"""The aggregator on generated run directories whose metrics are known, and on a real sweep.

The fixture sweep is asymbp.report.example's (also behind scripts/make_aggregate_example.py):
every dataset x feedback rule x stabilization x seed, configs composed from conf/train.yaml,
test accuracy from a formula except for the conditions in SPECIAL, whose expected table cells
are computed by hand below.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from asymbp.report.cli import main
from asymbp.report.example import (
    EPOCHS,
    HALF_WRITTEN,
    INCOMPLETE,
    LAYERS,
    run_config,
    write_run,
    write_sweep,
)
from asymbp.report.read import HISTORY_COLUMNS, LEAD_COLUMNS, collect, collect_runs, flatten
from asymbp.report.summary import SUMMARY_STATS, summarize
from asymbp.report.tables import paper_table

REPO = Path(__file__).resolve().parents[1]
# Hand-computed: errors (%) 10, 8, 6 -> mean 8, std sqrt((4 + 0 + 4) / 2) = 2; with the test
# accuracy at the best validation epoch (final - 1 point): 11, 9, 7 -> 9 +/- 2.
# 20, 15 -> 17.5, std sqrt(2 * 2.5**2) = 3.536; 4, 3 -> 3.5 +/- sqrt(0.5) = 0.707;
# 5, 3 -> 4 +/- sqrt(2) = 1.414; a single seed shows no std and no n.
EXPECTED_CELLS = {
    ("bp", "none", "digits"): "8.00 ± 2.00 (n=3)",
    ("rndf", "none", "mnist"): "17.50 ± 3.54 (n=2) †1",
    ("rndf", "none", "digits"): "diverged †3",
    ("usf", "BN", "digits"): "3.50 ± 0.71 (n=2)",
    ("frsf", "BM", "mnist"): "4.00 ± 1.41 (n=2)",
    ("sc (p=0.75)", "BN+BM", "mnist"): "13.00",
    ("sc (p=0.25)", "none", "mnist"): "",
    ("usf", "BN+BM", "mnist"): "2.00 ± 1.00 (n=3)",  # formula: 1.5 + 0.5 points, seeds -1/0/+1
}
N_RUNS = 2 * 8 * 4 * 3 - 12 - 2 + 1  # the grid, minus absent runs, plus a broken config
N_STATUS = {"done": N_RUNS - 7, "diverged": 4, "incomplete": 1, "broken": 2}


def run_main(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(arg) for arg in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    return write_sweep(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def runs(sweep) -> pd.DataFrame:
    return collect_runs([sweep])


@pytest.fixture(scope="module")
def aggregated(sweep, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("aggregate")
    code, stdout, stderr = run_main(sweep, "--out", out)
    assert code == 0, stderr
    return out, stdout


def markdown_rows(text: str) -> list[list[str]]:
    """The cells of a pipe table, header first, without the alignment line."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return [rows[0], *rows[2:]]


def cell(table: pd.DataFrame, rule: str, stabilization: str, dataset: str) -> str:
    row = table[(table["rule"] == rule) & (table["stabilization"] == stabilization)]
    assert len(row) == 1, (rule, stabilization)
    return row.iloc[0][dataset]


def test_statuses(sweep, runs):
    assert len(runs) == N_RUNS
    assert runs["status"].value_counts().to_dict() == N_STATUS
    by_run = runs.set_index("run")
    assert by_run.loc[f"{sweep.as_posix()}/{HALF_WRITTEN}", "reason"].startswith("config.yaml")
    broken = by_run.loc[f"{sweep.as_posix()}/mnist/frsf/bm/seed1"]
    assert broken["status"] == "broken"
    assert broken["reason"].startswith("metrics.json unreadable (JSONDecodeError: Expecting")
    assert by_run.loc[f"{sweep.as_posix()}/digits/usf/bn/seed2", "status"] == "incomplete"
    assert by_run.loc[f"{sweep.as_posix()}/mnist/rndf/none/seed0", "status"] == "diverged"
    assert not runs["run"].str.contains(".hydra", regex=False).any()


def test_runs_columns(runs):
    assert tuple(runs.columns[:9]) == LEAD_COLUMNS
    for column in (
        "test_acc",
        "test_acc_at_best_val",
        "metrics.device",
        "device",
        "feedback.concordance",
        "optimizer.lr",
        "norm.batch_manhattan",
    ):
        assert column in runs.columns, column
    row = runs[runs["run"].str.endswith("mnist/sc_p0.5/bn_bm/seed1")].iloc[0]
    assert (row["feedback"], row["norm"], row["seed"], row["device"]) == ("sc", "bn_bm", 1, "cuda")
    assert row["feedback.concordance"] == 0.5 and row["model.hidden"] == 128


def test_flatten_writes_lists_and_empty_mappings_as_json():
    nested = {"model": {"name": "mlp", "hidden": [256, 128]}, "extra": {}, "seed": 0}
    assert flatten(nested) == {
        "model.name": "mlp",
        "model.hidden": "[256, 128]",
        "extra": "{}",
        "seed": 0,
    }
    assert json.loads(flatten(nested)["model.hidden"]) == [256, 128]


def test_history_long_form(sweep):
    _, history = collect([sweep])
    assert list(history.columns) == HISTORY_COLUMNS
    one = history[history["run"].str.endswith("digits/bp/none/seed0")]
    assert len(one) == EPOCHS * (6 + 3 * len(LAYERS))
    angle = one[(one["metric"] == "angle_VW") & (one["epoch"] == 1)]
    assert list(angle["layer"]) == list(LAYERS)
    final = one[(one["metric"] == "test_acc") & (one["epoch"] == EPOCHS)]["value"]
    assert final.item() == pytest.approx(0.90)
    assert set(history["run"].str.rsplit("/", n=1).str[-1]) >= {"seed0"}
    diverged = history[history["run"].str.endswith("mnist/rndf/none/seed0")]
    assert diverged["epoch"].max() == 2


def test_summary_hand_computed(runs):
    summary = summarize(runs)
    assert len(summary) == 2 * 8 * 4 - 4
    for column in ("seed", "device", "threads", "dataset.name", "output_root"):
        assert column not in summary.columns

    def row(dataset, rule, norm):
        found = summary[
            (summary["dataset"] == dataset)
            & (summary["feedback"] == rule)
            & (summary["norm"] == norm)
        ]
        assert len(found) == 1
        return found.iloc[0]

    expected = {  # (dataset, rule, norm): mean, std, n, n_diverged, n_incomplete, n_broken
        ("digits", "bp", "none"): (0.08, 0.02, 3, 0, 0, 0),
        ("mnist", "rndf", "none"): (0.175, math.sqrt(2 * 0.025**2), 2, 1, 0, 0),
        ("digits", "rndf", "none"): (math.nan, math.nan, 0, 3, 0, 0),
        ("digits", "usf", "bn"): (0.035, math.sqrt(0.5) / 100, 2, 0, 1, 0),
        ("mnist", "frsf", "bm"): (0.04, math.sqrt(2) / 100, 2, 0, 0, 1),
        ("mnist", "usf", "bn_bm"): (0.02, 0.01, 3, 0, 0, 0),
    }
    for key, (mean, std, *counts) in expected.items():
        found = row(*key)
        assert found["test_error_mean"] == pytest.approx(mean, nan_ok=True), key
        assert found["test_error_std"] == pytest.approx(std, nan_ok=True), key
        assert list(found[["n", "n_diverged", "n_incomplete", "n_broken"]]) == counts, key
    assert set(summary["metric"]) == {"final"}


def test_summary_csv_matches(aggregated):
    out, _ = aggregated
    summary = pd.read_csv(out / "summary.csv")
    bp = summary[
        (summary["dataset"] == "digits")
        & (summary["feedback"] == "bp")
        & (summary["norm"] == "none")
    ].iloc[0]
    assert (bp["test_error_mean"], bp["test_error_std"], bp["n"]) == pytest.approx((0.08, 0.02, 3))
    assert list(summary.columns[-len(SUMMARY_STATS) :]) == list(SUMMARY_STATS)


def test_table_cells(runs):
    table = paper_table(summarize(runs))
    assert list(table.columns) == ["rule", "stabilization", "mnist", "digits"]
    assert len(table) == 8 * 4
    assert list(table["rule"].iloc[:4]) == ["bp"] * 4
    assert list(table["stabilization"].iloc[:4]) == ["none", "BN", "BM", "BN+BM"]
    assert list(pd.unique(table["rule"]))[-3:] == ["sc (p=0.25)", "sc (p=0.5)", "sc (p=0.75)"]
    for (rule, stabilization, dataset), text in EXPECTED_CELLS.items():
        assert cell(table, rule, stabilization, dataset) == text, (rule, stabilization, dataset)


def test_table_files(aggregated):
    out, stdout = aggregated
    markdown = (out / "table_paper.md").read_text()
    assert markdown_rows(markdown)[0] == ["rule", "stabilization", "mnist", "digits"]
    for text in EXPECTED_CELLS.values():
        assert text in markdown
    assert "†k: k runs of the condition diverged" in markdown
    assert markdown.strip() in stdout
    latex = (out / "table_paper.tex").read_text()
    assert r"17.50 $\pm$ 3.54 (n=2) $^\dagger$1" in latex
    assert r"\toprule" in latex and r"sc (p=0.5) & BN+BM" in latex
    assert r"Test error (\%)" in latex


def test_best_val_metric(sweep, tmp_path):
    code, stdout, _ = run_main(sweep, "--out", tmp_path, "--metric", "best_val", "--no-figures")
    assert code == 0
    assert "9.00 ± 2.00 (n=3)" in stdout and "epoch of best validation accuracy" in stdout
    assert set(pd.read_csv(tmp_path / "summary.csv")["metric"]) == {"best_val"}


def test_rerun_is_byte_identical(sweep, aggregated, tmp_path):
    out, _ = aggregated
    names = ("runs.csv", "history.csv", "summary.csv", "table_paper.md", "table_paper.tex")
    code, _, _ = run_main(sweep, "--out", tmp_path, "--no-figures")
    assert code == 0
    for name in names:
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name


def test_figures_are_valid(aggregated):
    out, _ = aggregated
    for name in ("fig_curves", "fig_stabilization", "fig_concordance", "fig_alignment"):
        png, pdf = (out / f"{name}.png").read_bytes(), (out / f"{name}.pdf").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000, name
        assert pdf.startswith(b"%PDF") and len(pdf) > 5_000, name


def test_custom_grouping(runs):
    summary = summarize(runs)
    table = paper_table(summary, rows=["norm"], cols=["feedback"])
    # dataset varies within a (norm, rule) cell, so it joins the rows instead of being pooled
    assert list(table.columns[:4]) == ["stabilization", "dataset", "bp", "usf"]
    assert list(table.columns[-3:]) == ["sc (p=0.25)", "sc (p=0.5)", "sc (p=0.75)"]
    row = table[(table["stabilization"] == "none") & (table["dataset"] == "digits")].iloc[0]
    assert row["bp"] == EXPECTED_CELLS[("bp", "none", "digits")]
    with pytest.raises(ValueError, match="unknown grouping key"):
        paper_table(summary, rows=["nosuchkey"])


def test_varying_config_key_joins_rows(tmp_path):
    for lr in (0.1, 0.01):
        config = run_config("digits", "bp", None, "none", seed=0 if lr == 0.1 else 1)
        config.optimizer.lr = lr
        write_run(tmp_path / f"lr{lr}", config, 0.9 if lr == 0.1 else 0.8)
    code, stdout, stderr = run_main(tmp_path, "--out", tmp_path / "agg", "--no-figures")
    assert code == 0 and "optimizer.lr" in stderr
    rows = markdown_rows((tmp_path / "agg" / "table_paper.md").read_text())
    assert rows == [
        ["rule", "stabilization", "optimizer.lr", "digits"],
        ["bp", "none", "0.01", "20.00"],
        ["bp", "none", "0.1", "10.00"],
    ]
    args = (tmp_path, "--out", tmp_path / "pooled", "--no-figures", "--ignore", "optimizer.lr")
    code, _, _ = run_main(*args)
    rows = markdown_rows((tmp_path / "pooled" / "table_paper.md").read_text())
    assert code == 0 and rows[1] == ["bp", "none", "15.00 ± 7.07 (n=2)"]


def test_bad_grouping_key_exits_2(sweep, tmp_path):
    code, _, stderr = run_main(sweep, "--out", tmp_path, "--rows", "nosuchkey", "--no-figures")
    assert code == 2 and "unknown grouping key" in stderr


def test_unfinished_runs_only(tmp_path):
    runs_dir = tmp_path / "runs"
    write_run(runs_dir / "inc", run_config("digits", "bp", None, "none", 0), INCOMPLETE)
    history = runs_dir / "inc" / "history.csv"
    history.write_text(history.read_text()[:-40])  # a line cut short mid-write
    (runs_dir / "empty").mkdir()
    (runs_dir / "empty" / "config.yaml").write_text("")
    code, stdout, stderr = run_main(runs_dir, "--out", tmp_path / "agg")
    assert code == 0
    assert "2 runs: 0 done, 0 diverged, 1 incomplete, 0 failed, 1 broken, 0 duplicate" in stdout
    assert "config.yaml unreadable (TypeError: not a mapping)" in stderr
    assert "no finished runs: no figures" in stderr
    table = markdown_rows((tmp_path / "agg" / "table_paper.md").read_text())
    assert table == [["rule", "stabilization", "digits"], ["bp", "none", ""]]
    summary = pd.read_csv(tmp_path / "agg" / "summary.csv")
    assert list(summary[["n", "n_incomplete", "n_broken"]].iloc[0]) == [0, 1, 0]
    # the cut-short third row is left out rather than read as wrong numbers
    assert sorted(set(pd.read_csv(tmp_path / "agg" / "history.csv")["epoch"])) == [1, 2]


def test_empty_input(tmp_path):
    code, _, stderr = run_main()
    assert code == 2 and "no run directories given" in stderr
    code, _, stderr = run_main(tmp_path, "--out", tmp_path / "agg")
    assert code == 2 and "no run directories" in stderr and str(tmp_path) in stderr
    assert not (tmp_path / "agg").exists()
    result = subprocess.run(
        [sys.executable, "-m", "asymbp.report", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"asymbp-aggregate: not a directory: {tmp_path / 'nope'}"
    ]


def test_notebook_runs(aggregated, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    out, _ = aggregated
    notebook = nbformat.read(REPO / "notebooks" / "analysis.ipynb", as_version=4)
    monkeypatch.setenv("ASYMBP_AGG_DIR", str(out))
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert any("text/html" in o.get("data", {}) for o in outputs)


@pytest.mark.slow
def test_end_to_end_digits_sweep(tmp_path):
    command = [
        sys.executable,
        "-m",
        "asymbp.train",
        "-m",
        "dataset=digits",
        "feedback=bp,usf",
        "seed=0,1",
        "epochs=1",
        f"output_root={tmp_path / 'runs'}",
        "exp_name=e2e",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(command, check=True, cwd=tmp_path, env=env)
    code, stdout, stderr = run_main(tmp_path, "--out", tmp_path / "agg")
    assert code == 0, stderr
    runs = pd.read_csv(tmp_path / "agg" / "runs.csv")
    assert len(runs) == 4 and set(runs["status"]) == {"done"}
    assert sorted(zip(runs["feedback"], runs["seed"], strict=True)) == [
        ("bp", 0),
        ("bp", 1),
        ("usf", 0),
        ("usf", 1),
    ]
    summary = pd.read_csv(tmp_path / "agg" / "summary.csv")
    assert sorted(summary["feedback"]) == ["bp", "usf"] and list(summary["n"]) == [2, 2]
    assert (tmp_path / "agg" / "fig_curves.png").stat().st_size > 10_000
    assert "(n=2)" in stdout


# ----------------------------------------------------------------------------- faults (issue 15)


def finished_run(path: Path, accuracy: float = 0.9, seed: int = 0, **changes) -> Path:
    """One finished digits/bp/none run; `changes` are dotted config keys set before writing."""
    config = run_config("digits", "bp", None, "none", seed)
    for key, value in changes.items():
        OmegaConf.update(config, key, value)
    write_run(path, config, accuracy)
    return path


def aggregate(*paths: Path, out: Path, expect: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(runs.csv, summary.csv, stderr) of asymbp-aggregate over `paths`."""
    code, _, stderr = run_main(*paths, "--out", out, "--no-figures")
    assert code == expect, stderr
    return pd.read_csv(out / "runs.csv"), pd.read_csv(out / "summary.csv"), stderr


def edit_json(path: Path, **values) -> None:
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, **values}))


def cut_history(run: Path) -> None:
    history = run / "history.csv"
    history.write_text(history.read_text()[:-40])  # the last row cut short mid-write


def metrics_of_nothing(run: Path) -> None:
    (run / "metrics.json").write_text("{}")


def accuracy_of_five(run: Path) -> None:
    edit_json(run / "metrics.json", test_acc=5, test_error=-4)


def history_accuracy_of_five(run: Path) -> None:
    history = pd.read_csv(run / "history.csv")
    history.loc[2, "test_acc"] = 5.0
    history.to_csv(run / "history.csv", index=False)


def config_says_usf(run: Path) -> None:
    config = OmegaConf.load(run / "config.yaml")
    config.feedback.name = "usf"
    (run / "config.yaml").write_text(OmegaConf.to_yaml(config))


def config_says_other_seed(run: Path) -> None:
    config = OmegaConf.load(run / "config.yaml")
    config.seed = 7
    (run / "config.yaml").write_text(OmegaConf.to_yaml(config))


def epochs_missing_from_history(run: Path) -> None:
    history = pd.read_csv(run / "history.csv")
    history.iloc[:-2].to_csv(run / "history.csv", index=False)


def more_epochs_in_config(run: Path) -> None:
    config = OmegaConf.load(run / "config.yaml")
    config.epochs = 120
    (run / "config.yaml").write_text(OmegaConf.to_yaml(config))


def metrics_not_the_last_epoch(run: Path) -> None:
    edit_json(run / "metrics.json", test_acc=0.5, test_error=0.5)


CORRUPTIONS = {
    cut_history: "history.csv ends in a cut-short line (after epoch 4)",
    metrics_of_nothing: "metrics.json lacks test_acc, test_error, best_val_acc",
    accuracy_of_five: "metrics.json test_acc 5 is not an accuracy in [0, 1]",
    history_accuracy_of_five: "history.csv test_acc 5 at epoch 3 is not an accuracy in [0, 1]",
    config_says_usf: "config.yaml says feedback=usf, metrics.json says bp",
    config_says_other_seed: "config.yaml says seed=7, metrics.json says 0",
    epochs_missing_from_history: "history.csv has 3 epochs, metrics.json says 5",
    more_epochs_in_config: "config.yaml says epochs=120, metrics.json says 5 completed",
    metrics_not_the_last_epoch: "metrics.json test_acc 0.5 is not the last epoch's (0.9)",
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__)
def test_a_corrupted_finished_run_is_broken_with_the_reason(corrupt, tmp_path):
    """DONE is no proof: files that cannot all be true make the run `broken`, out of the mean."""
    finished_run(tmp_path / "runs" / "good", 0.8, seed=1)
    run = finished_run(tmp_path / "runs" / "bad", 0.9, seed=0)
    corrupt(run)
    runs, summary, stderr = aggregate(tmp_path / "runs", out=tmp_path / "agg")
    bad = runs.set_index("run").loc[run.as_posix()]
    assert bad["status"] == "broken"
    assert bad["reason"].startswith(CORRUPTIONS[corrupt]), bad["reason"]
    assert f"broken: {run.as_posix()} ({bad['reason']})" in stderr
    assert (summary["n"].sum(), summary["n_broken"].sum()) == (1, 1)
    assert summary.loc[summary["n"] == 1, "test_error_mean"].item() == pytest.approx(0.2)


def test_a_cut_short_history_row_is_never_read_as_numbers(tmp_path):
    run = finished_run(tmp_path / "runs" / "r")
    cut_history(run)
    _, history = collect([tmp_path / "runs"])
    assert history["epoch"].max() == EPOCHS - 1  # the partial row of epoch 5 is left out
    assert history[history["metric"] == "val_acc"]["value"].min() > 0.5


def test_failed_runs_are_listed_with_their_error_and_counted(tmp_path):
    """Contract 1: FAILED (first line: the one-line error), no DONE -> status failed."""
    error = "asymbp-train: error: fashion_mnist: no train-images-idx3-ubyte(.gz) in /data/x"
    finished_run(tmp_path / "runs" / "ok", 0.9, seed=0)
    finished_run(tmp_path / "runs" / "ok2", 0.9, seed=2)
    failed = tmp_path / "runs" / "failed"
    failed.mkdir()
    OmegaConf.save(run_config("digits", "bp", None, "none", 1), failed / "config.yaml")
    (failed / "FAILED").write_text(f"{error}\nTraceback lines that follow are not the reason\n")
    no_config = tmp_path / "runs" / "unresolvable"
    no_config.mkdir()
    (no_config / "FAILED").write_text("asymbp-train: error: optimizer.lr=-1: must be > 0\n")
    stale = finished_run(tmp_path / "runs" / "rerun_ok", 0.8, seed=3)
    (stale / "FAILED").write_text("an old failure: DONE says the rerun finished\n")
    runs, summary, stderr = aggregate(tmp_path / "runs", out=tmp_path / "agg")
    status = runs.set_index("run")
    assert status.loc[failed.as_posix(), "status"] == "failed"
    assert status.loc[failed.as_posix(), "reason"] == error
    assert status.loc[failed.as_posix(), "seed"] == 1
    assert status.loc[no_config.as_posix(), ["status", "reason"]].tolist() == [
        "failed",
        "asymbp-train: error: optimizer.lr=-1: must be > 0",
    ]
    assert status.loc[stale.as_posix(), "status"] == "done"
    assert f"failed: {failed.as_posix()} ({error})" in stderr
    assert list(summary[["n", "n_failed"]].iloc[0]) == [3, 1]  # no config: in no condition


def test_the_same_condition_and_seed_in_two_folders_is_counted_once(tmp_path):
    """Two folders holding one sweep (or a copy of a run) must not pool as extra seeds."""
    for seed, accuracy in ((0, 0.9), (1, 0.8)):
        finished_run(tmp_path / "a" / f"seed{seed}", accuracy, seed=seed)
    finished_run(tmp_path / "b" / "seed0", 0.9, seed=0)  # the same run again
    incomplete = tmp_path / "b" / "seed1_rerun"
    write_run(incomplete, run_config("digits", "bp", None, "none", 1), INCOMPLETE)
    runs, summary, stderr = aggregate(tmp_path / "a", tmp_path / "b", out=tmp_path / "agg")
    status = runs.set_index("run")["status"]
    assert status[(tmp_path / "b" / "seed0").as_posix()] == "duplicate"
    assert status[incomplete.as_posix()] == "duplicate"  # the finished seed 1 is counted
    assert status[(tmp_path / "a" / "seed0").as_posix()] == "done"
    reason = runs.set_index("run").loc[(tmp_path / "b" / "seed0").as_posix(), "reason"]
    assert reason == f"same condition and seed as {(tmp_path / 'a' / 'seed0').as_posix()}"
    row = summary.iloc[0]
    # errors 10 and 20: mean 15, std sqrt(2 * 5**2) = 7.07; pooled as 3 runs it would be 13.33
    assert (row["n"], row["n_duplicate"], row["n_incomplete"]) == (2, 2, 0)
    assert row["test_error_mean"] == pytest.approx(0.15)
    assert row["test_error_std"] == pytest.approx(math.sqrt(2 * 0.05**2))
    assert "warning: 2 run(s) repeat a condition and seed" in stderr


def test_a_number_spelled_differently_is_the_same_condition(tmp_path):
    finished_run(tmp_path / "a" / "r", 0.9, seed=0, **{"optimizer.momentum": 1})
    finished_run(tmp_path / "b" / "r", 0.9, seed=0, **{"optimizer.momentum": 1.0})
    finished_run(tmp_path / "b" / "s", 0.8, seed=1, **{"optimizer.momentum": 1})
    runs, summary, _ = aggregate(tmp_path / "a", tmp_path / "b", out=tmp_path / "agg")
    assert sorted(runs["status"]) == ["done", "done", "duplicate"]
    assert len(summary) == 1 and summary["n"].item() == 2


def without_validation(run: Path) -> None:
    """What asymbp-train writes with val_fraction=0: no val_acc, best epoch 1 by default."""
    config = OmegaConf.load(run / "config.yaml")
    config.val_fraction = 0.0
    (run / "config.yaml").write_text(OmegaConf.to_yaml(config))
    history = pd.read_csv(run / "history.csv").assign(val_acc=math.nan)
    history.to_csv(run / "history.csv", index=False)
    first = history.iloc[0]
    edit_json(
        run / "metrics.json",
        val_acc=None,
        best_val_acc=None,
        best_val_epoch=1,
        test_acc_at_best_val=first["test_acc"],
    )


def test_best_val_without_a_validation_split_is_refused(tmp_path):
    finished_run(tmp_path / "runs" / "with_val", 0.9, seed=0)
    without_validation(finished_run(tmp_path / "runs" / "no_val", 0.9, seed=1))
    out = tmp_path / "agg"
    code, _, stderr = run_main(tmp_path / "runs", "--out", out, "--metric", "best_val")
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert "--metric best_val needs a validation split, but 1 finished run(s)" in stderr
    assert (tmp_path / "runs" / "no_val").as_posix() in stderr and not out.exists()
    runs, summary, _ = aggregate(tmp_path / "runs", out=out)  # --metric final is fine
    assert set(runs["status"]) == {"done"} and summary["n"].sum() == 2


def test_out_that_is_a_file_is_one_line_and_exit_2(tmp_path):
    finished_run(tmp_path / "runs" / "r")
    report = tmp_path / "report.txt"
    report.write_text("keep me")
    for out in (report, report / "sub"):
        code, stdout, stderr = run_main(tmp_path / "runs", "--out", out)
        assert code == 2 and stdout == "", stderr
        assert stderr.startswith("asymbp-aggregate: --out ") and "is a file" in stderr
        assert len(stderr.strip().splitlines()) == 1
    assert report.read_text() == "keep me"


def test_ignore_with_a_typo_is_refused_naming_the_keys(tmp_path):
    finished_run(tmp_path / "runs" / "r")
    code, _, stderr = run_main(
        tmp_path / "runs", "--out", tmp_path / "agg", "--ignore", "optimzer.lr"
    )
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert "unknown --ignore key 'optimzer.lr' (did you mean 'optimizer.lr'?)" in stderr
    assert "optimizer.momentum" in stderr and "batch_size" in stderr
    assert not (tmp_path / "agg").exists()
    for key in ("optimizer.lr", "threads", "seed"):  # a config key, keys always left out
        code, _, stderr = run_main(tmp_path / "runs", "--out", tmp_path / key, "--ignore", key)
        assert code == 0, stderr


def test_real_runs_pass_the_consistency_checks(make_config, tmp_path):
    """What asymbp-train writes is never called broken: a run without validation split, one that
    diverges, one that finishes (the checks must not turn real results into `broken`)."""
    from asymbp.train import run

    synthetic = ["dataset=synthetic", "dataset.train_size=128", "dataset.test_size=64"]
    run(make_config(*synthetic, "epochs=2", "val_fraction=0"))
    run(make_config(*synthetic, "epochs=2", "norm=none", "optimizer.lr=1000"))
    run(make_config(*synthetic, "epochs=2", "feedback=sc", "feedback.concordance=0.5"))
    runs, _, _ = aggregate(tmp_path / "outputs", out=tmp_path / "agg")
    assert sorted(runs["status"]) == ["diverged", "done", "done"], runs["reason"].tolist()
    best_val = ("--metric", "best_val")
    code, _, stderr = run_main(tmp_path / "outputs", "--out", tmp_path / "bv", *best_val)
    assert code == 2 and "1 finished run(s) have none (val_fraction=0)" in stderr

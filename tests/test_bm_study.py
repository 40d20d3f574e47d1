"""scripts/bm_study.py: the Batch Manhattan variants ranked on validation from real (tiny) runs."""

from __future__ import annotations

import contextlib
import importlib.util
import io

import pandas as pd
from conftest import REPO

from asymbp.report.read import collect_runs
from asymbp.train import run

SMALL = ["dataset=synthetic", "dataset.train_size=512", "dataset.noise=1.5", "epochs=2",
         "val_fraction=0.3", "model=mlp", "alignment=false"]  # fmt: skip
VARIANTS = [("gradient", "all"), ("update", "hidden")]


def load_script():
    spec = importlib.util.spec_from_file_location("bm_study", REPO / "scripts/bm_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_variant_is_read_at_its_bm_lr_chosen_on_validation(make_config, tmp_path):
    for sign_of, scope in VARIANTS:
        for bm_lr in (0.0003, 0.003):
            run(make_config(*SMALL, "norm=bn_bm", f"norm.sign_of={sign_of}",
                            f"norm.scope={scope}", f"optimizer.bm_lr={bm_lr}"))  # fmt: skip
    run(make_config(*SMALL, "norm=none", "optimizer.lr=0.01"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = load_script().main([str(tmp_path / "outputs"), "--out", str(tmp_path / "t.md")])
    assert code == 0
    table = (tmp_path / "t.md").read_text()
    assert table.strip() == out.getvalue().strip()
    rows = [line.split("|")[1:-1] for line in table.splitlines()[2:]]
    rows = [[cell.strip() for cell in row] for row in rows]
    assert len(rows) == 3 and rows[-1][0] == "-" and rows[-1][1] == "reference: no BM (norm=none)"
    assert sorted(row[0] for row in rows[:2]) == ["1", "2"]
    runs = collect_runs([tmp_path / "outputs"])
    for row in rows[:2]:
        sign_of = row[1].split(",")[0].removeprefix("sign of ")
        mine = runs[runs["norm.sign_of"] == sign_of]
        mine = mine[mine["norm.batch_manhattan"].astype(bool)]
        best = mine.loc[pd.to_numeric(mine["best_val_acc"]).idxmax(), "optimizer.bm_lr"]
        assert float(row[3]) == best  # chosen on validation, never on the test set
        val = 100 * (1 - pd.to_numeric(mine["best_val_acc"]).max())
        assert row[5].startswith(f"{val:.2f} ±")


def test_no_runs_is_one_line_and_exit_2(tmp_path, capsys):
    assert load_script().main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1

"""hparams_search presets: an Optuna search whose objective is the run's best validation accuracy,
with the study in the sweep folder so that the same command resumes it (digits, 1 epoch)."""

from __future__ import annotations

import json

import pytest
from conftest import compose_config, run_cli

from asymbp.feedback import RULES
from asymbp.train import objective

optuna = pytest.importorskip("optuna")

TINY = ["dataset=digits", "epochs=1", "alignment=false", "progress=false"]


def test_objective_is_best_validation_accuracy():
    assert objective({"best_val_acc": 0.93, "diverged": False}) == 0.93
    assert objective({"best_val_acc": 0.93, "diverged": True}) == 0.0
    assert objective({"best_val_acc": None, "diverged": False}) == 0.0
    assert objective({"best_val_acc": float("nan"), "diverged": False}) == 0.0


@pytest.mark.parametrize("rule", list(RULES))
def test_every_rule_has_a_preset(rule):
    cfg = compose_config(f"hparams_search={rule}", "hydra/sweeper=optuna")
    assert cfg.feedback.name == rule and cfg.exp_name == f"hparams_{rule}"


@pytest.mark.slow
def test_search_on_digits_stores_its_study_and_resumes(tmp_path):
    # named alone: asymbp-train adds the Optuna sweeper (Hydra keeps the primary config's arms)
    command = ["-m", "hparams_search=usf", "hydra.sweeper.n_trials=2",
               f"output_root={tmp_path}", *TINY]  # fmt: skip
    first = run_cli(*command)
    assert first.returncode == 0, first.stderr[-2000:]
    sweep = tmp_path / "hparams_usf" / ".sweep"
    storage = f"sqlite:///{sweep / 'optuna.db'}"
    study = optuna.load_study(study_name="hparams_usf", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    # Each trial's value is the best validation accuracy its run wrote.
    written = sorted(
        json.loads(path.read_text())["best_val_acc"]
        for path in (tmp_path / "hparams_usf").glob("*/metrics.json")
    )
    assert sorted(t.value for t in study.trials) == pytest.approx(written)
    second = run_cli(*command)
    assert second.returncode == 0, second.stderr[-2000:]
    study = optuna.load_study(study_name="hparams_usf", storage=storage)
    assert len(study.trials) == 4  # loaded and continued, not started over
    assert study.best_value == max(t.value for t in study.trials)

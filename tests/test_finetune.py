"""init_from: a run starts from the weights of another finished run (named by its config, trained
once if missing, or by its directory) and trains on under its own rule."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import torch
from conftest import run_cli

from asymbp import finetune, runs
from asymbp.build import validate
from asymbp.config import ConfigError
from asymbp.data import Splits
from asymbp.layers import asymmetric_layers
from asymbp.train import _fresh_state, run

SMALL = ["dataset=synthetic", "dataset.train_size=128", "dataset.test_size=64", "epochs=2"]
FROM_BP = "init_from={feedback: bp}"


def test_the_source_is_this_config_with_the_named_values(make_config):
    cfg = make_config(*SMALL, "feedback=usf", "norm=bm", "init_from={feedback: bp, epochs: 3}")
    source = finetune.source_config(cfg)
    assert source.feedback.name == "bp" and source.epochs == 3 and source.init_from is None
    assert source.norm.name == "bm" and source.seed == cfg.seed and source.exp_name == cfg.exp_name
    assert "scale" not in source.feedback  # bp's whole config, not usf's with another name
    assert runs.run_id(cfg).startswith("synthetic_paper_cnn_usf-from-bp_bm_sgd_s0_")
    assert runs.run_id(cfg) != runs.run_id(make_config(*SMALL, "feedback=usf", "norm=bm"))


def test_fine_tuning_starts_from_the_sources_final_weights_with_its_own_feedback(make_config):
    cfg = make_config(*SMALL, "feedback=frsf", FROM_BP)
    source_dir = finetune.prepare(cfg, run)  # trains the bp run: it was missing
    assert runs.finished_metrics(source_dir)["feedback"] == "bp"
    trained = runs.load_checkpoint(source_dir / runs.CHECKPOINT)["model"]
    splits = Splits(cfg, torch.device("cpu"))
    state = _fresh_state(cfg, splits, torch.device("cpu"), source_dir)
    weights = state.model.state_dict()
    for key, tensor in trained.items():
        assert torch.equal(weights[key], tensor), key  # W, b and BN statistics: the source's
    fresh = _fresh_state(cfg, splits, torch.device("cpu"))  # the same run from scratch
    for name, layer in asymmetric_layers(state.model):
        assert layer.feedback_rule.name == "frsf"
        for key, value in layer.feedback_state().items():  # V: this run's draw, not the source's
            assert torch.equal(value, fresh.model.get_submodule(name).feedback_state()[key])
    metrics = run(cfg)
    assert metrics["epochs_completed"] == 2 and not metrics["diverged"]


def test_a_sweep_of_fine_tunings_trains_its_source_once(tmp_path):
    out = tmp_path / "outputs"
    result = run_cli(
        "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "feedback=usf,frsf", *SMALL,
        FROM_BP, "progress=false", f"output_root={out}", "exp_name=ft",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    done = sorted(p.parent.name for p in out.rglob(runs.DONE))
    assert len(done) == 3
    assert sum("_bp_" in name for name in done) == 1
    assert sum("-from-bp_" in name for name in done) == 2
    source = next(out.rglob("*_bp_*"))
    assert (source / runs.LOG).read_text().count("done: test_acc=") == 1  # trained once
    assert len(pd.read_csv(source / runs.HISTORY)) == 2


def test_a_run_directory_as_source(make_config, tmp_path):
    source_cfg = make_config(*SMALL, "feedback=bp", "exp_name=pre")
    run(source_cfg)
    source = runs.run_directory(source_cfg)
    cfg = make_config(*SMALL, "feedback=usf", f"init_from={source}")
    assert runs.identity(cfg)["init_from"] == source.name  # by name: the same on every machine
    assert "-from-run_" in runs.run_id(cfg)
    assert run(cfg)["epochs_completed"] == 2


@pytest.mark.parametrize(
    "value, message",
    [
        ("init_from=3", "init_from=3 is not a run directory or a mapping"),
        ("init_from={}", "names this run itself"),
        ("init_from={nope: 1}", "init_from.nope is not a key of the config"),
        ("init_from={feedback: usf}", "names this run itself: change a value"),
        ("init_from={feedback: nope}", "init_from: "),
    ],
)
def test_bad_init_from_is_one_config_error(make_config, value, message, tmp_path):
    cfg = make_config(*SMALL, "feedback=usf", value)
    with pytest.raises(ConfigError, match=message):
        validate(cfg)
        finetune.prepare(cfg, run)
    assert not (tmp_path / "outputs").exists()


def test_an_unfinished_or_foreign_source_fails_before_anything_is_written(make_config, tmp_path):
    out = tmp_path / "outputs"
    missing = tmp_path / "nowhere"
    result = run_cli(*SMALL, f"init_from={missing}", f"output_root={out}")
    assert result.returncode == 2 and not out.exists()
    assert result.stderr.strip().splitlines() == [
        f"asymbp-train: error: init_from='{missing}': {missing} is not a finished run (no DONE): "
        "finish it first (run its command again), or name it by its config, e.g. "
        "init_from='{feedback: bp}'"
    ]
    source_cfg = make_config(*SMALL, "feedback=bp", "model=mlp", "exp_name=pre")
    run(source_cfg)
    source = runs.run_directory(source_cfg)
    with pytest.raises(ConfigError, match="^init_from: the model of .* does not fit this one"):
        run(make_config(*SMALL, f"init_from={source}", "exp_name=ft"))
    assert not (out / "ft").exists()
    shutil.copytree(source, tmp_path / "copy")
    (tmp_path / "copy" / runs.CHECKPOINT).unlink()
    with pytest.raises(ConfigError, match="has no checkpoint.pt"):
        run(make_config(*SMALL, "model=mlp", f"init_from={tmp_path / 'copy'}"))

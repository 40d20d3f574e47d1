"""asymbp-train: configs, run directories, resume, divergence, sweeps and bad input."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import CONFIG_DIR, compose_config, run_cli
from dataset_copies import COPIES
from omegaconf import OmegaConf

from asymbp import runs
from asymbp.build import make_model, make_optimizer, make_scheduler, validate
from asymbp.config import GROUPS, ConfigError
from asymbp.data import DatasetError, Splits
from asymbp.data.formats.idx import write_idx
from asymbp.optim import BatchManhattan
from asymbp.train import run

SYNTHETIC = ["dataset=synthetic", "dataset.train_size=256", "dataset.test_size=128"]
HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "val_acc", "test_acc", "lr", "seconds"]
METRIC_KEYS = {
    "test_acc", "test_error", "val_acc", "best_val_acc", "epochs_completed", "diverged",
    "wall_seconds", "device", "torch_version", "seed", *GROUPS,
}  # fmt: skip


def options(group: str) -> list[str]:
    """The group's options; files starting with "_" are bases other files build on."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml") if not p.stem.startswith("_"))


def tiny_idx_dir(root: Path) -> Path:
    gen = torch.Generator().manual_seed(0)
    for prefix, n in (("train", 40), ("t10k", 20)):
        write_idx(
            root / f"{prefix}-images-idx3-ubyte.gz",
            torch.randint(0, 256, (n, 28, 28), generator=gen, dtype=torch.uint8),
        )
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", (torch.arange(n) % 10).to(torch.uint8))
    return root


GROUP_OPTIONS = [(g, o) for g in GROUPS for o in options(g)]


@pytest.mark.parametrize("group, option", GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_every_option_composes_and_instantiates(group, option, tmp_path):
    overrides = [f"{group}={option}"]
    if group != "dataset":
        overrides += ["dataset=synthetic", "dataset.size=32", "dataset.channels=3"]
    if option == "vit":  # its LayerNorms are its normalization: the default bn_bm is refused
        overrides += ["norm=bm"]
    elif option in COPIES:  # the paper's datasets: a tiny copy in the real format
        tiny = COPIES[option](tmp_path / "data")
        overrides += [f"data_root={tmp_path / 'data'}", f"model={tiny.model}", *tiny.overrides]
    if option == "fashion_mnist":
        overrides += [f"dataset.root={tiny_idx_dir(tmp_path)}", f"data_root={tmp_path}"]
        overrides += ["dataset.expect.train=null", "dataset.expect.test=null"]  # a tiny copy
    cfg = compose_config(*overrides)
    validate(cfg)
    assert cfg[group].name == option
    splits = Splits(cfg, torch.device("cpu"))
    model = make_model(cfg, splits.input_shape, splits.num_classes)
    optimizer = make_optimizer(cfg, model)
    make_scheduler(cfg, optimizer)
    assert isinstance(optimizer, BatchManhattan) == cfg.norm.batch_manhattan
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert has_bn == cfg.norm.batch_norm
    logits = model(splits.normalize(splits.train[0][:4]))
    assert logits.shape == (4, splits.num_classes)


def test_defaults_are_the_issue_defaults():
    cfg = compose_config()
    assert [cfg[g].name for g in GROUPS] == [
        "digits", "paper_cnn", "usf", "bn_bm", "sgd",
    ]  # fmt: skip


def read_run(run_dir: Path):
    return (
        json.loads((run_dir / "metrics.json").read_text()),
        pd.read_csv(run_dir / "history.csv"),
    )


def test_short_run_writes_every_output_file(make_config):
    cfg = make_config(*SYNTHETIC, "epochs=2", "feedback=sc", "feedback.concordance=0.5")
    metrics = run(cfg)
    run_dir = runs.run_directory(cfg)
    assert {p.name for p in run_dir.iterdir()} == {
        "config.yaml", "history.csv", "metrics.json", "DONE", "checkpoint.pt", "train.log",
        runs.LOCK,
    }  # fmt: skip
    saved, history = read_run(run_dir)
    assert saved == json.loads(json.dumps(metrics))
    assert set(saved) >= METRIC_KEYS
    assert saved["epochs_completed"] == 2 and saved["diverged"] is False
    assert saved["feedback"] == "sc" and saved["test_error"] == pytest.approx(1 - saved["test_acc"])
    assert list(history.columns[:7]) == HISTORY_COLUMNS
    assert list(history["epoch"]) == [1, 2]
    layers = ["classifier.1", "classifier.4", "features.0"]
    for layer in layers:
        for metric in ("angle_VW", "concordance", "angle_error"):
            assert f"{metric}/{layer}" in history.columns
        assert history[f"concordance/{layer}"].iloc[-1] == pytest.approx(0.5, abs=0.05)
    assert OmegaConf.load(run_dir / "config.yaml").feedback.concordance == 0.5
    assert "epoch 2/2" in (run_dir / "train.log").read_text()


def test_run_directory_is_a_function_of_the_config_identity(make_config):
    base = runs.run_directory(make_config(*SYNTHETIC))
    assert base == runs.run_directory(make_config(*SYNTHETIC))
    assert base == runs.run_directory(make_config(*SYNTHETIC, "device=cpu", "threads=2"))
    assert base != runs.run_directory(make_config(*SYNTHETIC, "seed=1"))
    assert base != runs.run_directory(make_config(*SYNTHETIC, "optimizer.bm_lr=0.002"))
    assert base.name.startswith("synthetic_paper_cnn_usf_bn_bm_sgd_s0_")
    assert base.parent.name == "default"


def test_rerun_skips_a_finished_run_and_force_reruns(make_config, capsys):
    cfg = make_config(*SYNTHETIC, "epochs=1")
    first = run(cfg)
    run_dir = runs.run_directory(cfg)
    stamp = (run_dir / "metrics.json").stat().st_mtime_ns
    start = time.perf_counter()
    again = run(cfg)
    assert time.perf_counter() - start < 0.5
    assert again == json.loads(json.dumps(first))
    assert (run_dir / "metrics.json").stat().st_mtime_ns == stamp
    assert "skipped" in capsys.readouterr().out
    run(make_config(*SYNTHETIC, "epochs=1", "force=true"))
    assert (run_dir / "metrics.json").stat().st_mtime_ns != stamp


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("feedback", ["brsf", "frsf", "kp", "wm", "dfa"])
def test_interrupted_run_resumes_to_the_metrics_of_an_uninterrupted_one(make_config, feedback):
    args = [*SYNTHETIC, "epochs=4", f"feedback={feedback}", "deterministic=true"]
    straight = run(make_config(*args, "exp_name=straight"))

    cfg = make_config(*args, "exp_name=interrupted")

    def stop_after_two(epoch):
        if epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        run(cfg, on_epoch_end=stop_after_two)
    run_dir = runs.run_directory(cfg)
    assert not (run_dir / "DONE").exists() and not (run_dir / "metrics.json").exists()
    assert len(pd.read_csv(run_dir / "history.csv")) == 2
    resumed = run(cfg)
    assert "resuming" in (run_dir / "train.log").read_text()
    ignore = {"wall_seconds"}
    assert {k: v for k, v in resumed.items() if k not in ignore} == {
        k: v for k, v in straight.items() if k not in ignore
    }
    straight_history = pd.read_csv(
        runs.run_directory(make_config(*args, "exp_name=straight")) / "history.csv"
    )
    resumed_history = pd.read_csv(run_dir / "history.csv")
    pd.testing.assert_frame_equal(
        straight_history.drop(columns="seconds"), resumed_history.drop(columns="seconds")
    )


def test_deterministic_cpu_runs_are_bit_identical(make_config):
    args = [*SYNTHETIC, "epochs=2", "feedback=brsf", "deterministic=true"]
    a = run(make_config(*args, "exp_name=a"))
    b = run(make_config(*args, "exp_name=b"))
    history_a = pd.read_csv(runs.run_directory(make_config(*args, "exp_name=a")) / "history.csv")
    history_b = pd.read_csv(runs.run_directory(make_config(*args, "exp_name=b")) / "history.csv")
    assert a["test_acc"] == b["test_acc"]
    pd.testing.assert_frame_equal(
        history_a.drop(columns="seconds"), history_b.drop(columns="seconds")
    )


def test_digits_bp_with_bn_learns(make_config):
    metrics = run(make_config("feedback=bp", "norm=bn", "epochs=4"))
    assert metrics["test_acc"] >= 0.90
    assert not metrics["diverged"]


def test_huge_learning_rate_without_bn_or_bm_diverges(make_config):
    cfg = make_config("norm=none", "optimizer.lr=1000", "epochs=3")
    metrics = run(cfg)
    assert metrics["diverged"] is True
    assert metrics["epochs_completed"] < 3
    assert (runs.run_directory(cfg) / "DONE").exists()
    assert metrics["test_acc"] < 0.3


@pytest.mark.parametrize(
    "override, message",
    [
        ("epochs=0", "epochs=0 is out of range: an integer >= 1"),
        ("batch_size=-1", "batch_size=-1 is out of range: an integer >= 1"),
        ("optimizer.lr=-1", "optimizer.lr=-1 is out of range: a number > 0"),
        ("feedback.scale=-2", "feedback.scale=-2 is out of range: a number >= 0 or one of"),
        ("val_fraction=1.5", "val_fraction=1.5 is out of range: a number in [0, 1)"),
        ("optimizer.schedule=linear", "optimizer.schedule='linear' is unknown: choose one of none"),
    ],
)
def test_values_out_of_range_raise_config_error_naming_the_key(make_config, override, message):
    cfg = make_config(*SYNTHETIC, override)
    with pytest.raises(ConfigError) as error:
        run(cfg)
    assert message in str(error.value)
    assert not runs.run_directory(cfg).exists()


@pytest.mark.slow
def test_cli_bad_input_exits_with_one_line_and_no_done(tmp_path, make_config):
    out = tmp_path / "outputs"
    # issue 21 case 8: YAML's true is a Python int, which used to pass as 1 and fail mid-run
    result = run_cli("feedback=wm", "feedback.lr=true", f"output_root={out}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "asymbp-train: error: feedback.lr=True is out of range: a number > 0"
    ]
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError, match=rf"^fashion_mnist: .*{missing}"):
        run(make_config("dataset=fashion_mnist", f"dataset.root={missing}"))
    result = run_cli("feedback=nope", f"output_root={out}")
    assert result.returncode != 0
    assert "Available options in 'feedback'" in result.stderr and "usf" in result.stderr
    assert not list(out.rglob("DONE"))


@pytest.mark.slow
def test_multirun_sweep_of_two_rules_makes_two_run_directories(tmp_path):
    out = tmp_path / "outputs"
    result = run_cli(
        "-m", "feedback=bp,usf", *SYNTHETIC, "epochs=1", "threads=1", f"output_root={out}",
        "exp_name=sweep",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    done = sorted(p.parent.name for p in (out / "sweep").rglob("DONE"))
    assert len(done) == 2
    assert done[0].startswith("synthetic_paper_cnn_bp_") and done[1].startswith(
        "synthetic_paper_cnn_usf_"
    )
    assert "test_acc=" in result.stdout


def test_unreadable_checkpoint_starts_the_run_over(make_config):
    cfg = make_config(*SYNTHETIC, "epochs=2")

    def stop(epoch):
        raise Interrupt

    with pytest.raises(Interrupt):
        run(cfg, on_epoch_end=stop)
    checkpoint = runs.run_directory(cfg) / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    with pytest.warns(UserWarning, match="unreadable checkpoint"):
        metrics = run(cfg)
    assert metrics["epochs_completed"] == 2
    assert list(pd.read_csv(runs.run_directory(cfg) / "history.csv")["epoch"]) == [1, 2]


def test_a_last_batch_of_one_sample_is_dropped_so_batch_norm_trains(make_config):
    cfg = make_config(
        *SYNTHETIC, "epochs=1", "norm=bn", "val_fraction=0", "train_subset=127", "batch_size=9"
    )
    metrics = run(cfg)  # 127 = 14 * 9 + 1: the last batch would hold one sample
    assert metrics["epochs_completed"] == 1 and not metrics["diverged"]


def test_help_lists_options_but_not_the_parts_they_share():
    result = run_cli("--help")
    assert result.returncode == 0
    block = result.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    groups = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
    assert "_" not in "".join(name[0] for v in groups.values() for name in v.split(", "))
    assert "fashion_mnist" in groups["dataset"] and "usf" in groups["hparams_search"]
    assert "pgd" in groups["attack"] and "robustness" in groups["experiment"]


@pytest.mark.parametrize(
    "choice", ["dataset=_image_base", "-m hparams_search=_search", "experiment=_biotorch_lenet",
               "attack=_common", "-m dataset=digits,_image_base"],
)  # fmt: skip
def test_a_shared_part_chosen_as_an_option_is_one_line(choice, capsys):
    from asymbp.train import refuse_shared_parts

    with pytest.raises(SystemExit) as stop:
        refuse_shared_parts(choice.split())
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(lines) == 1
    assert "is a part its options share, not an option: choose" in lines[0]


def test_a_shared_part_is_refused_before_hydra_composes_anything(tmp_path):
    result = run_cli("dataset=_image_base", f"output_root={tmp_path / 'out'}")
    assert result.returncode == 2 and not (tmp_path / "out").exists()
    assert result.stderr.strip().splitlines() == [
        "asymbp-train: error: dataset=_image_base is a part its options share, not an option: "
        "choose " + ", ".join(sorted(p.stem for p in (CONFIG_DIR / "dataset").glob("[!_]*.yaml")))
    ]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (("batch_size=1", "norm=bn"), "batch_size=1 with BatchNorm (norm=bn"),
        (("batch_size=1", "norm=bn_bm"), "BatchNorm needs 2 or more samples per batch"),
        (("train_subset=2",), "train_subset=2 is below the 10 classes of dataset=digits"),
        (("train_subset=9",), "use train_subset >= 10"),
    ],
)
def test_values_only_the_data_and_model_can_check_are_one_line_before_writing(
    make_config, tmp_path, overrides, message
):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as error:
        run(make_config(*overrides, "epochs=1"))
    assert "\n" not in str(error.value) and not (tmp_path / "outputs").exists()


def test_a_value_only_the_data_can_check_exits_2_in_one_line(tmp_path):
    result = run_cli("train_subset=2", "epochs=1", f"output_root={tmp_path / 'out'}")
    assert result.returncode == 2 and not (tmp_path / "out").exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("asymbp-train: error: train_subset=2 is below")


def test_threads_above_the_cores_are_lowered_with_one_warning(make_config, capsys):
    from asymbp.build import available_cores

    cfg = make_config("epochs=1", "model=mlp", "threads=1000")
    metrics = run(cfg)
    err = capsys.readouterr().err
    assert f"threads=1000 is more than the {available_cores()} cores" in err
    assert metrics["threads"] == available_cores()
    assert f"threads: {available_cores()}" in (runs.run_directory(cfg) / "config.yaml").read_text()


#: Every numeric top-level key with a value past its range (train.yaml's keys; build.validate).
TOP_LEVEL_NUMBERS = {
    "epochs": 0, "batch_size": 0, "eval_batch_size": 0, "alignment_batch": 0, "seed": 2**63,
    "val_seed": 2**63, "val_fraction": 1.0, "train_subset": 0, "threads": 0,
    "divergence_loss": 0,
}  # fmt: skip


def test_every_numeric_top_level_key_is_listed():
    train = OmegaConf.load(CONFIG_DIR / "train.yaml")
    numeric = {
        key for key, value in train.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }  # fmt: skip
    nullable_numbers = {"train_subset", "threads"}  # null by default
    assert numeric | nullable_numbers == set(TOP_LEVEL_NUMBERS)


@pytest.mark.parametrize("key", sorted(TOP_LEVEL_NUMBERS))
@pytest.mark.parametrize("bad", ["true", "'x'", "-1", "nan", "range"])
def test_a_bad_top_level_number_is_one_config_error_before_anything_is_written(
    make_config, tmp_path, key, bad
):
    value = TOP_LEVEL_NUMBERS[key] if bad == "range" else bad
    if key == "val_fraction" and bad == "-1":
        value = -0.5
    cfg = make_config(f"{key}={value}")
    with pytest.raises(ConfigError, match=f"^{key}=") as error:
        run(cfg)
    assert "\n" not in str(error.value) and not (tmp_path / "outputs").exists()

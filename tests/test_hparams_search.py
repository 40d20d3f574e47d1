"""hparams_search presets: an Optuna search whose objective is the run's best validation accuracy,
with the study in the sweep folder so that the same command resumes it (digits, 1 epoch)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, compose_config, orphans_after_killing, run_cli

from asymbp import runs
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
    cfg = compose_config(f"hparams_search={rule}", "hydra/sweeper=asymbp_optuna")
    assert cfg.feedback.name == rule and cfg.exp_name == f"hparams_{rule}"


@pytest.mark.slow
def test_search_on_digits_stores_its_study_and_a_rerun_continues_it_with_new_proposals(tmp_path):
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
    first, second = [t.params for t in study.trials[:2]], [t.params for t in study.trials[2:]]
    assert not any(p in first for p in second)  # not a replay of the first invocation


# ------------------------------------------------- searches that survive what users do (issue 21)

LONG = ["dataset=synthetic", "dataset.train_size=128", "dataset.test_size=64", "epochs=2000",
        "alignment=false", "progress=false", "threads=1"]  # fmt: skip


def load(tmp_path, name="hparams_usf"):
    storage = f"sqlite:///{tmp_path / name / '.sweep' / 'optuna.db'}"
    return optuna.load_study(study_name=name, storage=storage)


def states(study) -> list[str]:
    return [t.state.name for t in study.trials]


def test_a_failed_trial_is_recorded_fail_and_the_search_goes_on(tmp_path):
    tiny = [a for a in TINY if not a.startswith("epochs")]
    command = ["-m", "hparams_search=usf", "hydra.sweeper.n_trials=4", "epochs=choice(0,1)",
               "hydra.sweeper.max_failures=null", f"output_root={tmp_path}", *tiny]  # fmt: skip
    result = run_cli(*command)
    assert result.returncode == 0, result.stderr[-2000:]
    study = load(tmp_path)
    assert len(study.trials) == 4 and "FAIL" in states(study) and "COMPLETE" in states(study)
    for trial in study.trials:
        assert trial.state.name == ("FAIL" if trial.params["epochs"] == 0 else "COMPLETE")
    assert "Traceback" not in result.stderr
    assert "asymbp-train: error: epochs=0 is" in result.stderr  # the trial's one-line error
    assert "asymbp-train: trial" in result.stderr and "failed: epochs=0" in result.stderr


def test_the_failure_budget_stops_a_search_in_one_line(tmp_path):
    command = ["-m", "hparams_search=usf", "hydra.sweeper.n_trials=5", "epochs=0",
               f"output_root={tmp_path}", "dataset=digits"]  # fmt: skip
    result = run_cli(*command)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        "asymbp-train: search stopped: 3 trials failed"
    )
    assert states(load(tmp_path)) == ["FAIL", "FAIL", "FAIL"]  # the default budget, 3


def _search(tmp_path, *extra) -> subprocess.Popen:
    command = [sys.executable, "-m", "asymbp.train", "-m", "hparams_search=usf",
               "hydra.sweeper.n_trials=2", f"output_root={tmp_path}", *LONG, *extra]  # fmt: skip
    return subprocess.Popen(command, cwd=REPO, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip


def _wait_for_checkpoint(tmp_path, count=1) -> None:
    deadline = time.monotonic() + 120
    while len(list(tmp_path.rglob(runs.CHECKPOINT))) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(list(tmp_path.rglob(runs.CHECKPOINT))) >= count, "no trial started"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_marks_the_trial_fail_in_one_line(tmp_path, sig):
    search = _search(tmp_path)
    _wait_for_checkpoint(tmp_path)
    search.send_signal(sig)
    _, stderr = search.communicate(timeout=60)
    assert search.returncode == 130 and "Traceback" not in stderr, stderr[-2000:]
    assert stderr.strip().splitlines()[-1].startswith(
        "asymbp-train: search interrupted: trial 0 marked FAIL"
    )
    assert states(load(tmp_path)) == ["FAIL"]


@pytest.mark.slow
def test_a_trial_left_running_by_a_dead_search_is_marked_fail_on_the_next_start(tmp_path):
    search = _search(tmp_path)
    _wait_for_checkpoint(tmp_path)
    search.kill()  # SIGKILL: nothing is marked
    search.communicate(timeout=60)
    assert states(load(tmp_path)) == ["RUNNING"]
    result = run_cli("-m", "hparams_search=usf", "hydra.sweeper.n_trials=1",
                     f"output_root={tmp_path}", *TINY)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "trial 0 was left RUNNING by process" in result.stderr
    assert states(load(tmp_path)) == ["FAIL", "COMPLETE"]


@pytest.mark.slow
def test_two_searches_on_one_study_share_it(tmp_path):
    short = ["hydra.sweeper.n_trials=3", "epochs=1"]
    first, second = _search(tmp_path, *short), _search(tmp_path, *short)
    outputs = [p.communicate(timeout=300) for p in (first, second)]
    for process, (_, stderr) in zip((first, second), outputs, strict=True):
        assert process.returncode == 0 and "Traceback" not in stderr, stderr[-2000:]
    study = load(tmp_path)
    assert len(study.trials) == 6 and "RUNNING" not in states(study)
    busy = [t for t in study.trials if t.state.name == "FAIL"]
    assert all(t.user_attrs.get("asymbp.busy") for t in busy)  # only ever a busy run directory


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_killing_a_joblib_search_ends_its_workers(tmp_path):
    search = _search(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                     "hydra.sweeper.n_jobs=2")  # fmt: skip
    _wait_for_checkpoint(tmp_path, 2)
    assert orphans_after_killing(search) == []

"""Experiment loggers: what they write is read back with TensorBoard's and MLflow's own readers."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_cli

from asymbp import loggers, runs
from asymbp.build import ConfigError
from asymbp.train import run

SMALL = [
    "dataset=synthetic", "dataset.train_size=128", "dataset.test_size=64", "model=mlp",
    "model.hidden=[16]", "epochs=4", "deterministic=true",
]  # fmt: skip


class Crash(Exception):
    pass


def crash_before_checkpoint(monkeypatch, epoch: int) -> None:
    """Make the run die after `epoch` is in history.csv and the logger, before its checkpoint."""
    save = runs.save_checkpoint

    def save_or_crash(path, state):
        if len(state["history"]) == epoch:
            raise Crash
        save(path, state)

    monkeypatch.setattr(runs, "save_checkpoint", save_or_crash)


def resumed_run(make_config, monkeypatch, *overrides: str):
    """A run that crashes once after epoch 3 was logged but not checkpointed, then resumes."""
    cfg = make_config(*SMALL, *overrides)
    with monkeypatch.context() as patch:
        crash_before_checkpoint(patch, 3)
        with pytest.raises(Crash):
            run(cfg)
    first_attempt = pd.read_csv(runs.run_directory(cfg) / runs.HISTORY)
    assert list(first_attempt["epoch"]) == [1, 2, 3]
    run(cfg)
    run_dir = runs.run_directory(cfg)
    assert "resuming" in (run_dir / runs.LOG).read_text()
    return cfg, run_dir, pd.read_csv(run_dir / runs.HISTORY)


def alignment_columns(history: pd.DataFrame) -> list[str]:
    columns = [c for c in history.columns if "/" in c]
    assert any(c.startswith("angle_VW/") for c in columns)
    assert any(c.startswith("concordance/") for c in columns)
    assert any(c.startswith("angle_error/") for c in columns)
    return columns


# ------------------------------------------------------------------------------------ tensorboard


def read_events(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    return events


def test_tensorboard_logs_every_history_column_per_epoch_and_hparams(make_config):
    pytest.importorskip("tensorboard")
    cfg = make_config(*SMALL, "logger=tensorboard", "feedback=sc", "feedback.concordance=0.75")
    run(cfg)
    run_dir = runs.run_directory(cfg)
    history = pd.read_csv(run_dir / runs.HISTORY)
    events = read_events(run_dir / runs.TENSORBOARD)
    columns = [c for c in history.columns if c != "epoch"]
    assert sorted(events.Tags()["scalars"]) == sorted(columns)
    assert alignment_columns(history)
    for column in columns:
        scalars = events.Scalars(column)
        assert [s.step for s in scalars] == [1, 2, 3, 4]
        assert [s.value for s in scalars] == pytest.approx(list(history[column]), rel=1e-6)

    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    logged = HParamsPluginData.FromString(content).session_start_info.hparams
    assert logged["feedback.name"].string_value == "sc"
    assert logged["feedback.concordance"].number_value == 0.75
    assert logged["model.hidden"].string_value == "[16]"
    assert logged["epochs"].number_value == 4
    assert "output_root" not in logged  # where a run is written is not a hyperparameter
    assert len(list((run_dir / runs.TENSORBOARD).iterdir())) == 1  # one TensorBoard run


def test_tensorboard_resume_continues_without_duplicated_steps(make_config, monkeypatch):
    pytest.importorskip("tensorboard")
    cfg, run_dir, history = resumed_run(make_config, monkeypatch, "logger=tensorboard")
    events = read_events(run_dir / runs.TENSORBOARD)
    for column in ("train_loss", "test_acc", *alignment_columns(history)):
        scalars = events.Scalars(column)
        assert [s.step for s in scalars] == [1, 2, 3, 4], column
        # epoch 3 holds the resumed attempt's value, the one history.csv keeps
        assert [s.value for s in scalars] == pytest.approx(list(history[column]), rel=1e-6)


def test_a_forced_rerun_starts_a_fresh_tensorboard_run(make_config):
    pytest.importorskip("tensorboard")
    cfg = make_config(*SMALL, "logger=tensorboard", "epochs=2")
    run(cfg)
    run(make_config(*SMALL, "logger=tensorboard", "epochs=2", "force=true"))
    events = read_events(runs.run_directory(cfg) / runs.TENSORBOARD)
    assert [s.step for s in events.Scalars("train_loss")] == [1, 2]


# ----------------------------------------------------------------------------------------- mlflow


@pytest.fixture(scope="session")
def empty_mlflow_store(tmp_path_factory):
    """An MLflow sqlite store with its tables made (creating them takes seconds), to copy."""
    pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_client(tmp_path, empty_mlflow_store, monkeypatch):
    """Reads the store the `make_config` runs log to (its tables made in advance)."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    store = tmp_path / "outputs" / ".mlflow"
    store.mkdir(parents=True)
    shutil.copy(empty_mlflow_store, store / "mlflow.db")

    def client(cfg):
        assert Path(cfg.output_root) / ".mlflow" == store
        return MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")

    return client


def test_mlflow_logs_params_metrics_per_epoch_and_the_run_files(make_config, mlflow_client):
    cfg = make_config(*SMALL, "logger=mlflow", "exp_name=study")
    run(cfg)
    run(make_config(*SMALL, "logger=mlflow", "exp_name=study", "seed=1"))
    run_dir = runs.run_directory(cfg)
    history = pd.read_csv(run_dir / runs.HISTORY)
    client = mlflow_client(cfg)
    experiment = client.get_experiment_by_name("study")
    found = client.search_runs([experiment.experiment_id])
    assert len(found) == 2  # one MLflow run per run directory, both in the exp_name experiment
    run_id = (run_dir / runs.MLFLOW_RUN).read_text().strip()
    logged = client.get_run(run_id)
    assert logged.info.status == "FINISHED"
    assert logged.info.run_name == run_dir.name
    assert logged.data.params["feedback.name"] == "usf"
    assert logged.data.params["model.hidden"] == "[16]"
    assert logged.data.params["seed"] == "0"
    columns = [c for c in history.columns if c != "epoch"]
    assert sorted(logged.data.metrics) == sorted(loggers.mlflow_key(c) for c in columns)
    for column in ("train_loss", "val_acc", *alignment_columns(history)):
        metric = sorted(client.get_metric_history(run_id, column), key=lambda m: m.step)
        assert [m.step for m in metric] == [1, 2, 3, 4]
        assert [m.value for m in metric] == pytest.approx(list(history[column]))
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert artifacts == {
        runs.CONFIG, runs.HISTORY, runs.METRICS, runs.LOG, runs.DONE, runs.MLFLOW_RUN
    }  # fmt: skip


def test_mlflow_resume_reuses_the_run_without_duplicated_steps(
    make_config, monkeypatch, mlflow_client
):
    cfg, run_dir, history = resumed_run(make_config, monkeypatch, "logger=mlflow")
    client = mlflow_client(cfg)
    experiment = client.get_experiment_by_name(cfg.exp_name)
    (logged,) = client.search_runs([experiment.experiment_id])
    assert logged.info.run_id == (run_dir / runs.MLFLOW_RUN).read_text().strip()
    assert logged.info.status == "FINISHED"
    for column in ("train_loss", "test_acc", *alignment_columns(history)):
        metric = sorted(client.get_metric_history(logged.info.run_id, column), key=lambda m: m.step)
        assert [m.step for m in metric] == [1, 2, 3, 4], column
        # deterministic resume: the first attempt's epoch 3 equals the one history.csv keeps
        assert [m.value for m in metric] == pytest.approx(list(history[column]), rel=1e-5)


def test_a_resume_whose_mlflow_run_is_gone_logs_to_a_new_one(
    make_config, monkeypatch, mlflow_client, empty_mlflow_store
):
    cfg = make_config(*SMALL, "logger=mlflow")
    with monkeypatch.context() as patch:
        crash_before_checkpoint(patch, 3)
        with pytest.raises(Crash):
            run(cfg)
    id_file = runs.run_directory(cfg) / runs.MLFLOW_RUN
    lost = id_file.read_text().strip()
    shutil.copy(empty_mlflow_store, Path(cfg.output_root) / ".mlflow" / "mlflow.db")  # store reset
    run(cfg)
    client = mlflow_client(cfg)
    (logged,) = client.search_runs([client.get_experiment_by_name(cfg.exp_name).experiment_id])
    assert logged.info.run_id == id_file.read_text().strip() != lost
    steps = sorted(m.step for m in client.get_metric_history(logged.info.run_id, "train_loss"))
    assert steps == [3, 4]  # epochs 1-2 went to the lost run


def test_a_crashed_run_is_marked_failed_in_mlflow(make_config, monkeypatch, mlflow_client):
    cfg = make_config(*SMALL, "logger=mlflow")
    crash_before_checkpoint(monkeypatch, 2)
    with pytest.raises(Crash):
        run(cfg)
    run_id = (runs.run_directory(cfg) / runs.MLFLOW_RUN).read_text().strip()
    logged = mlflow_client(cfg).get_run(run_id)
    assert logged.info.status == "FAILED"
    assert logged.data.metrics["train_loss"] == pytest.approx(
        pd.read_csv(runs.run_directory(cfg) / runs.HISTORY)["train_loss"].iloc[-1]
    )


def test_mlflow_keys_keep_allowed_characters_only():
    assert loggers.mlflow_key("angle_VW/features.0") == "angle_VW/features.0"
    assert loggers.mlflow_key("|V|/|W|/fc-1") == "_V_/_W_/fc-1"


# ------------------------------------------------------------------------------ missing extras


@pytest.mark.parametrize("name, module", [("tensorboard", "tensorboard"), ("mlflow", "mlflow")])
def test_a_missing_extra_is_a_one_line_error_naming_the_install(
    make_config, monkeypatch, name, module
):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    cfg = make_config(*SMALL, f"logger={name}")
    with pytest.raises(ConfigError) as error:
        run(cfg)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"logger={name} needs {module}")
    assert message.endswith(f"pip install 'asymbp[{name}]'")
    assert not (runs.run_directory(cfg) / runs.HISTORY).exists()  # stopped before any epoch


# ------------------------------------------------------- runs killed after their last epoch


class Killed(BaseException):
    """A kill -9: nothing after it runs, the logger is not closed."""


def _kill_at(monkeypatch, name: str) -> None:
    """Die when the run writes `name` (metrics.json or DONE), before the logger closes."""
    write_text = runs.write_text

    def dying(path, text):
        if Path(path).name == name:
            if name == runs.DONE:
                write_text(path, text)
            raise Killed
        write_text(path, text)

    monkeypatch.setattr(runs, "write_text", dying)
    monkeypatch.setattr(loggers.MLflowLogger, "close", lambda self, status: None)


@pytest.mark.parametrize("where", [runs.METRICS, runs.DONE])
def test_an_mlflow_run_left_running_by_a_kill_after_the_last_epoch_is_repaired(
    make_config, monkeypatch, mlflow_client, where
):
    cfg = make_config(*SMALL, "logger=mlflow")
    with monkeypatch.context() as patch:
        _kill_at(patch, where)
        with pytest.raises(Killed):
            run(cfg)
    run_dir = runs.run_directory(cfg)
    run_id = (run_dir / runs.MLFLOW_RUN).read_text().strip()
    assert mlflow_client(cfg).get_run(run_id).info.status == "RUNNING"
    run(cfg)  # resumes with nothing to train (metrics.json) or skips the finished run (DONE)
    logged = mlflow_client(cfg).get_run(run_id)
    assert logged.info.status == "FINISHED"
    artifacts = {a.path for a in mlflow_client(cfg).list_artifacts(run_id)}
    assert {runs.CONFIG, runs.HISTORY, runs.METRICS, runs.DONE} <= artifacts
    run(cfg)  # once FINISHED, a finished run's MLflow run is left as it is
    assert mlflow_client(cfg).get_run(run_id).info.end_time == logged.info.end_time


@pytest.mark.parametrize(
    "uri, message",
    [
        ("bogus://x", "scheme 'bogus' is not one MLflow stores take"),
        ("http://127.0.0.1:9", "no tracking server answers at 127.0.0.1:9"),
        ("sqlite:////nonexistent/dir/m.db", "the folder /nonexistent/dir does not exist"),
    ],
)
def test_an_unusable_tracking_uri_is_refused_before_anything_is_written(
    make_config, tmp_path, uri, message
):
    start = time.monotonic()
    with pytest.raises(ConfigError, match=message) as error:
        run(make_config(*SMALL, "logger=mlflow", f"logger.tracking_uri={uri}"))
    assert time.monotonic() - start < 10 and "\n" not in str(error.value)
    assert not (tmp_path / "outputs").exists() and not Path("/nonexistent").exists()


def test_an_unreachable_server_exits_2_in_one_line(tmp_path):
    result = run_cli(*SMALL, "logger=mlflow", "logger.tracking_uri=http://127.0.0.1:9",
                     f"output_root={tmp_path / 'out'}")  # fmt: skip
    assert result.returncode == 2 and not (tmp_path / "out").exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no tracking server answers at 127.0.0.1:9" in lines[0], lines

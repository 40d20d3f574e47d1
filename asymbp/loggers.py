"""Experiment loggers beside the run directory (the `logger` config group): TensorBoard, MLflow.

The run directory stays the record; a logger mirrors it for browsing many runs at once. Each
finished epoch's history row (every column of history.csv, alignment columns included) goes out
as scalars at step = epoch, and the run's hyperparameters (its identity: the resolved config
without where/how-fast keys) once per run.

Resuming continues the same logger run without duplicated steps. A logger learns from the first
row it is given whether the run starts fresh (epoch 1) or resumes (epoch k > 1):
  - tensorboard: event files in <run dir>/tensorboard, one TensorBoard run per run directory;
    a fresh start removes stale event files, a resume opens the writer with purge_step=k, which
    makes TensorBoard drop anything an interrupted attempt logged at steps >= k.
  - mlflow: the MLflow run id is kept in the run directory; a resume reopens that run and logs only
    epochs after the last step it holds. At the end the run's files (not the checkpoint) become
    artifacts and the MLflow run is marked FINISHED (FAILED / KILLED when training raised).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import re
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pandas as pd
from omegaconf import DictConfig

from asymbp import runs
from asymbp.config import ConfigError
from asymbp.registry import Registry

#: Metrics the TensorBoard hparams dashboard shows beside each run's hyperparameters.
HPARAM_METRICS = ("test_acc", "val_acc", "train_acc", "train_loss")
MLFLOW_BATCH = 100  # the most params (and, with room to spare, metrics) one MLflow log_batch takes
#: logger.name -> a class built as cls(cfg, run_dir), with log_epoch(row) and close(status).
LOGGERS: Registry[type] = Registry("logger")


def _require(logger: str, *modules: str) -> None:
    """Import `modules`, or raise the one-line error that names the extra to install."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ConfigError(
                f"logger={logger} needs {module} ({error}): pip install 'asymbp[{logger}]'"
            ) from None


def hyperparameters(cfg: DictConfig) -> dict[str, str | int | float | bool]:
    """The run's identity as flat {dotted key: scalar}; lists as JSON text, null as "null"."""
    flat = pd.json_normalize(runs.identity(cfg), sep=".").iloc[0].to_dict()
    return {
        key: json.dumps(value) if isinstance(value, list | dict) or value is None else value
        for key, value in sorted(flat.items())
    }


def _scalars(row: dict) -> dict[str, float]:
    return {key: float(value) for key, value in row.items() if key != "epoch"}


@LOGGERS.register("none")
class NoLogger:
    """`logger=none`: the run directory alone is the record."""

    def __init__(self, cfg: DictConfig, run_dir: Path):
        pass

    def log_epoch(self, row: dict) -> None:
        pass

    def close(self, status: str) -> None:
        pass


@LOGGERS.register("tensorboard")
class TensorBoardLogger:
    def __init__(self, cfg: DictConfig, run_dir: Path):
        _require("tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self._writer_class = SummaryWriter
        self.log_dir = run_dir / runs.TENSORBOARD
        self.hparams = hyperparameters(cfg)
        self.writer = None

    def _open(self, first_epoch: int) -> None:
        from torch.utils.tensorboard.summary import hparams

        if first_epoch == 1:  # a fresh start: event files of an earlier attempt are stale
            shutil.rmtree(self.log_dir, ignore_errors=True)
        self.writer = self._writer_class(str(self.log_dir), purge_step=first_epoch)
        if first_epoch == 1:
            for summary in hparams(self.hparams, dict.fromkeys(HPARAM_METRICS, math.nan)):
                self.writer.file_writer.add_summary(summary)

    def log_epoch(self, row: dict) -> None:
        if self.writer is None:
            self._open(int(row["epoch"]))
        for key, value in _scalars(row).items():
            self.writer.add_scalar(key, value, global_step=int(row["epoch"]))
        self.writer.flush()

    def close(self, status: str) -> None:
        if self.writer is not None:
            self.writer.close()


#: Tracking URI schemes MLflow's stores take (a database's may name a driver: mysql+pymysql).
MLFLOW_SCHEMES = ("file", "sqlite", "http", "https", "databricks", "postgresql", "mysql", "mssql")
#: Seconds asymbp waits for a tracking server to answer before the run starts.
MLFLOW_CONNECT_SECONDS = 5


def check_tracking_uri(uri: str | None) -> None:
    """ConfigError (one line, within MLFLOW_CONNECT_SECONDS) for a tracking URI MLflow could not
    use: an unknown scheme, a server that does not answer, a file or sqlite store whose folder does
    not exist (asymbp creates only its default store, <output_root>/.mlflow)."""
    if uri is None:
        return
    parsed = urlparse(str(uri))
    scheme = parsed.scheme.split("+")[0]
    where = f"logger.tracking_uri={uri}"
    if scheme not in MLFLOW_SCHEMES:
        raise ConfigError(
            f"{where}: scheme {parsed.scheme or '(none)'!r} is not one MLflow stores take: use "
            f"{', '.join(MLFLOW_SCHEMES)} (e.g. http://host:5000 or sqlite:////abs/path/mlflow.db)"
        )
    if scheme in ("http", "https"):
        port = parsed.port or (443 if scheme == "https" else 80)
        try:
            socket.create_connection((parsed.hostname, port), MLFLOW_CONNECT_SECONDS).close()
        except OSError as error:
            raise ConfigError(
                f"{where}: no tracking server answers at {parsed.hostname}:{port} "
                f"({error.strerror or error}): start it (mlflow server) or fix the URI"
            ) from None
    elif scheme in ("sqlite", "file"):
        # sqlite:///rel.db and sqlite:////abs/m.db: the database file, in a folder that must
        # exist; file:///abs/mlruns: the store's folder, which MLflow makes inside its parent
        path = Path(parsed.path[1:] if scheme == "sqlite" else url2pathname(parsed.path))
        folder = path.parent
        if not folder.is_dir():
            raise ConfigError(
                f"{where}: the folder {folder} does not exist: create it, or leave "
                "logger.tracking_uri null for <output_root>/.mlflow"
            )


@LOGGERS.register("mlflow")
class MLflowLogger:
    @staticmethod
    def check(cfg: DictConfig) -> None:
        check_tracking_uri(cfg.logger.get("tracking_uri"))

    def __init__(self, cfg: DictConfig, run_dir: Path):
        options = cfg.logger
        # A hidden folder: asymbp-aggregate skips it (the artifacts hold copies of config.yaml).
        root = Path(cfg.output_root).resolve() / ".mlflow"
        uri = options.tracking_uri or f"sqlite:///{root / 'mlflow.db'}"
        database = ("sqlalchemy", "alembic") if uri.startswith("sqlite") else ()
        _require("mlflow", "mlflow", *database)
        from filelock import FileLock
        from mlflow.tracking import MlflowClient

        artifacts = options.artifact_location
        if artifacts is None and options.tracking_uri is None:
            artifacts = (root / "artifacts").as_uri()
        root.mkdir(parents=True, exist_ok=True)
        # Parallel sweep jobs would race to create the store's tables and the experiment.
        with FileLock(str(root / "lock")):
            self.client = MlflowClient(tracking_uri=uri)
            experiment = self.client.get_experiment_by_name(str(options.experiment))
            self.experiment_id = (
                experiment.experiment_id
                if experiment is not None
                else self.client.create_experiment(str(options.experiment), artifacts)
            )
        self.run_dir = run_dir
        self.params = hyperparameters(cfg)
        self.run_id: str | None = None
        self.last_step = 0

    def _stored_run(self, id_file: Path) -> str | None:
        """The id of the MLflow run an earlier attempt logged to, if the store still holds it."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(id_file.read_text().strip()).info.run_id
        except (OSError, MlflowException):
            return None

    def _left_running(self) -> str | None:
        """The id of this run directory's MLflow run when the store holds it RUNNING (an attempt
        killed before it closed it)."""
        stored = self._stored_run(self.run_dir / runs.MLFLOW_RUN)
        if stored is None or self.client.get_run(stored).info.status != "RUNNING":
            return None
        return stored

    def _open(self, first_epoch: int) -> None:
        from mlflow.entities import Param

        id_file = self.run_dir / runs.MLFLOW_RUN
        if first_epoch > 1 and (stored := self._stored_run(id_file)) is not None:
            self.run_id = stored
            self.client.update_run(self.run_id, status="RUNNING")
            history = self.client.get_metric_history(self.run_id, "train_loss")
            self.last_step = max((metric.step for metric in history), default=0)
            return
        run = self.client.create_run(
            self.experiment_id,
            run_name=self.run_dir.name,
            tags={"asymbp.run_dir": str(self.run_dir.resolve())},
        )
        self.run_id = run.info.run_id
        params = [Param(key, str(value)) for key, value in self.params.items()]
        for start in range(0, len(params), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, params=params[start : start + MLFLOW_BATCH])
        runs.write_text(id_file, self.run_id + "\n")

    def log_epoch(self, row: dict) -> None:
        from mlflow.entities import Metric

        if self.run_id is None:
            self._open(int(row["epoch"]))
        step = int(row["epoch"])
        if step <= self.last_step:  # logged before the interruption this run resumes from
            return
        stamp = int(time.time() * 1000)
        metrics = [
            Metric(mlflow_key(key), value, stamp, step) for key, value in _scalars(row).items()
        ]
        for start in range(0, len(metrics), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[start : start + MLFLOW_BATCH])
        self.last_step = step

    def close(self, status: str) -> None:
        """Artifacts and the final status; with nothing logged by this attempt (a resume that
        found every epoch done), the run an earlier attempt left RUNNING is closed instead."""
        if self.run_id is None:
            self.run_id = self._left_running()
            if self.run_id is None:
                return
        for path in sorted(self.run_dir.iterdir()):
            # The run's files; the checkpoint is resume state, not a result.
            if path.is_file() and path.name != runs.CHECKPOINT and not path.name.startswith("."):
                self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, status=status)


def mlflow_key(column: str) -> str:
    """A history column as an MLflow metric name (letters, digits, _ - . / space and : only)."""
    return re.sub(r"[^\w\-./ :]", "_", column)


def check(cfg: DictConfig) -> None:
    """The logger's own checks of its config (a reachable tracking URI), before anything is
    written; ConfigError for the first problem."""
    logger = LOGGERS.get_or_fail(cfg.logger.name)
    if hasattr(logger, "check"):
        logger.check(cfg)


def repair(cfg: DictConfig, run_dir: Path) -> None:
    """For a finished run found again: close the logger run that an attempt killed after its
    last epoch left open (MLflow RUNNING: artifacts, then FINISHED)."""
    if cfg.logger.name == "mlflow" and (run_dir / runs.MLFLOW_RUN).is_file():
        LOGGERS.get_or_fail("mlflow")(cfg, run_dir).close("FINISHED")


@contextlib.contextmanager
def open_logger(cfg: DictConfig, run_dir: Path) -> Iterator[NoLogger]:
    """The `logger` group's logger for one run; closed FINISHED, or FAILED / KILLED on an error."""
    logger = LOGGERS.get_or_fail(cfg.logger.name)(cfg, run_dir)
    try:
        yield logger
    except KeyboardInterrupt:
        logger.close("KILLED")
        raise
    except BaseException:
        logger.close("FAILED")
        raise
    logger.close("FINISHED")

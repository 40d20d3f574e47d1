"""A training run as one job of a Hydra `-m` sweep: its thread budget, its GPU, its failure record,
and its end when the sweep's process ends.

The sweeper (hydra_plugins/asymbp_sweeper) runs every job even when some fail, then exits
non-zero listing them; a job that fails with a one-line error raises `JobFailed` after
`asymbp.runs.write_failed` has recorded it in its run directory.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
import time
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from asymbp.registry import PositiveInt, Seed

#: Set by the sweeper to its process id; a job running in a child of that process (a joblib or
#: submitit-local worker) ends when that process is gone.
SWEEP_PID_ENV = "ASYMBP_SWEEP_PID"
#: Seconds between two checks that the sweep's process is still there.
PARENT_CHECK_SECONDS = 0.5
#: Exit status of a job whose run directory another process is writing (EX_TEMPFAIL: try later).
EXIT_BUSY = 75
#: Exit status after Ctrl-C (128 + SIGINT), as a shell reports it.
EXIT_INTERRUPTED = 130


_watching = False


class JobFailed(Exception):
    """A sweep job that failed; its message is the one-line error (already printed). `busy`:
    another process was writing its run directory (nothing wrong with the job itself)."""

    def __init__(self, message: str, busy: bool = False):
        super().__init__(message)
        self.busy = busy


#: An Optuna search's numeric keys (hydra.sweeper.*; conf/hparams_search/_search.yaml) and their
#: ranges: checked on the command line by asymbp-train and by the sweeper when it starts.
SEARCH_KEYS = {
    "n_trials": PositiveInt, "n_jobs": PositiveInt, "max_failures": PositiveInt | None,
    "sampler.seed": Seed | None,
}  # fmt: skip


def in_sweep() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def launcher_threads() -> int | None:
    """Torch threads for one job of a parallel launcher, so that jobs do not oversubscribe cores:
    cores / n_jobs under joblib, cpus_per_task under submitit, ray.remote.num_cpus under Ray;
    None elsewhere."""
    if not HydraConfig.initialized():
        return None
    launcher = HydraConfig.get().launcher
    target = str(launcher.get("_target_", ""))
    if target.endswith("JoblibLauncher"):
        cores = os.cpu_count() or 1
        n_jobs = launcher.n_jobs if launcher.n_jobs > 0 else cores + 1 + launcher.n_jobs
        return max(1, cores // max(1, n_jobs))
    if "submitit_launcher" in target and launcher.get("cpus_per_task"):
        return int(launcher.cpus_per_task)
    if target.endswith("RayLauncher") and launcher.ray.remote.get("num_cpus"):
        return max(1, int(launcher.ray.remote.num_cpus))
    return None


def round_robin(device: str, job_num: int, gpus: int) -> str:
    """The device of job `job_num` of a sweep on a machine with `gpus` visible GPUs: job k takes
    cuda:(k mod gpus) when its device is auto or cuda and there are several GPUs; otherwise
    `device` as it is (cpu, a GPU named by index, one GPU, none)."""
    if device not in ("auto", "cuda") or gpus < 2:
        return device
    return f"cuda:{job_num % gpus}"


def job_device(device: str) -> str:
    """round_robin over this machine's visible GPUs (CUDA_VISIBLE_DEVICES applies) for the
    current sweep job (Hydra's job number); `device` unchanged outside a sweep."""
    if not in_sweep() or device not in ("auto", "cuda"):
        return device
    return round_robin(device, HydraConfig.get().job.num, torch.cuda.device_count())


def end_with_parent() -> bool:
    """In a worker process of the sweep, start a thread that ends this process as soon as the
    sweep's process is gone (killed, even by SIGKILL), so that no orphan keeps training and races
    with a rerun. Returns whether it was started (not in the sweep's own process, nor on SLURM)."""
    global _watching
    sweep_pid = os.environ.get(SWEEP_PID_ENV)
    if not sweep_pid or not sweep_pid.isdigit() or int(sweep_pid) == os.getpid():
        return False
    parent = os.getppid()
    if parent != int(sweep_pid):  # e.g. a SLURM job: its parent is slurmstepd
        return False
    if _watching:  # a worker runs many jobs; one watcher serves them all
        return True
    _watching = True

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        print(
            "asymbp-train: the sweep's process has ended; stopping this job (rerun the sweep to "
            "resume it)",
            file=sys.stderr,
            flush=True,
        )
        os._exit(EXIT_INTERRUPTED)  # files are written atomically: the run resumes on rerun

    threading.Thread(target=watch, name="asymbp-parent-watch", daemon=True).start()
    return True


#: Where a sweep's report goes, inside its folder <output_root>/<exp_name>.
REPORT_DIR = "report"


def sweep_report(config: DictConfig) -> Path | None:
    """asymbp-aggregate (tables and CSVs; no figures, they take seconds) of the sweep's folder
    (<output_root>/<exp_name>) into its report/, when `sweep_report` is on; one line says where
    (or why not: the sweep's exit status stays its own). Returns the report's folder, or None."""
    if not config.get("sweep_report", False) or config.get("dry_run", False):
        return None  # off, or a dry run: nothing written
    from asymbp.report.cli import main as aggregate  # pandas and matplotlib only here

    folder = Path(str(config.output_root)) / str(config.exp_name)
    out = folder / REPORT_DIR
    messages = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(messages):
            status = aggregate([str(folder), "--out", str(out), "--no-figures"])
    except Exception as error:  # a report must never turn a finished sweep into a traceback
        status, messages = 1, io.StringIO(f"{type(error).__name__}: {error}")
    if status != 0:
        last = (messages.getvalue().strip().splitlines() or ["?"])[-1]
        print(f"asymbp-train: no sweep report ({last})", file=sys.stderr)
        return None
    print(f"asymbp-train: sweep report in {out} (sweep_report=false turns it off)", file=sys.stderr)
    return out


class SweepReport(Callback):
    """Hydra callback (train.yaml's hydra.callbacks): the sweep's report when a -m sweep ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_report(config)

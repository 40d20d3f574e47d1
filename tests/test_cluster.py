"""Beyond one machine: a preempted or timed-out submitit job (hydra/launcher=slurm) is requeued
and resumes from its checkpoint; Ray runs a sweep's runs as Ray tasks (hydra/launcher=ray)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, alive, children

from asymbp import runs
from asymbp.train import run

#: A run of about 0.1 s per epoch: long enough to be preempted mid-way, short enough to finish.
RUN = (
    "dataset=synthetic", "dataset.train_size=2048", "dataset.size=16", "model=mlp",
    "epochs=30", "threads=1", "progress=false",
)  # fmt: skip


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        kids = children(todo.pop())
        found |= kids
        todo += kids
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _history(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / runs.HISTORY).drop(columns="seconds")


def test_a_preempted_submitit_job_saves_its_epoch_is_requeued_and_ends_with_the_same_history(
    tmp_path, make_config
):
    """submitit_local, as SLURM's preemption or time limit does: USR2 reaches the job (the local
    controller sends it `signal_delay_s` before `timeout_min`; Hydra's config cannot make that
    shorter than 30 s, so the test sends it as submitit's LocalJob._interrupt does)."""
    sweep = subprocess.Popen(
        [sys.executable, "-m", "asymbp.train", "-m", *RUN, f"output_root={tmp_path / 'sweep'}",
         "hydra/launcher=submitit_local", "+hydra.launcher.max_num_timeout=2",
         "sweep_report=false"],  # fmt: skip
        cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        run_dir = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and sweep.poll() is None:
            found = list((tmp_path / "sweep").glob(f"*/*/{runs.HISTORY}"))
            if found and len(pd.read_csv(found[0])) >= 3:
                run_dir = found[0].parent
                break
            time.sleep(0.05)
        assert run_dir is not None, "the job never saved 3 epochs"
        (task,) = [p for p in _descendants(sweep.pid) if "submitit.core._submit" in _cmdline(p)]
        os.kill(task, signal.SIGUSR2)
        output, _ = sweep.communicate(timeout=180)
    finally:
        for pid in _descendants(sweep.pid) if sweep.poll() is None else ():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        sweep.kill()
    assert sweep.returncode == 0, output
    log = (run_dir / runs.LOG).read_text()
    assert "the run stops after this epoch's checkpoint" in log
    stopped = int(log.split("handing the job to submitit")[0].rsplit("epoch ", 1)[1].split()[0])
    assert 3 <= stopped < 30 and f"after epoch {stopped}" in log  # resumed from that checkpoint
    requeued = "".join(p.read_text() for p in (tmp_path / "sweep").rglob("*_log.out"))
    assert "Requeued job" in requeued
    assert (run_dir / runs.DONE).exists()

    reference = make_config(*RUN)
    run(reference)
    uninterrupted = _history(runs.run_directory(reference))
    assert len(uninterrupted) == 30
    pd.testing.assert_frame_equal(_history(run_dir), uninterrupted)


def test_ray_runs_each_run_as_a_ray_task_and_the_sweep_is_aggregated(tmp_path):
    pytest.importorskip(
        "hydra_plugins.hydra_ray_launcher", reason="hydra-ray-launcher not installed: asymbp[ray]"
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_AUTH_MODE": "disabled"}
    result = subprocess.run(
        [sys.executable, "-m", "asymbp.train", "-m", "hydra/launcher=ray", "seed=0,1",
         "model=mlp", "epochs=2", "progress=false", f"output_root={tmp_path}",
         "hydra.launcher.ray.init.num_cpus=2", "+hydra.launcher.ray.init.include_dashboard=false"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.count("(_run_job pid=") >= 2  # the runs' lines come from Ray's workers
    done = sorted((tmp_path / "default").glob(f"*/{runs.DONE}"))
    assert [d.parent.name.split("_s")[-1][:1] for d in done] == ["0", "1"]
    for marker in done:
        metrics = json.loads((marker.parent / runs.METRICS).read_text())
        assert metrics["threads"] == 1  # ray.remote.num_cpus
    table = pd.read_csv(tmp_path / "default" / "report" / "runs.csv")
    assert sorted(table["seed"]) == [0, 1]


class _Requeued(Exception):
    pass


def test_the_preemption_signal_waits_for_the_next_checkpoint_also_inside_a_nested_run(monkeypatch):
    """In-process: submitit's handler (a stand-in that records and raises, as its requeue exits)
    is called at the first checkpoint after the signal, not when the signal arrives; a run
    trained inside another (init_from's source) hands it over at its own checkpoint."""
    from submitit import JobEnvironment

    from asymbp.train import _preemption_deferred

    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    sig, calls = JobEnvironment._usr_sig(), []

    def submitit_handler(signum, frame):
        calls.append(signum)
        raise _Requeued

    original = signal.signal(sig, submitit_handler)
    try:
        with _preemption_deferred() as outer:
            outer(1)  # no signal yet: nothing happens
            with _preemption_deferred() as inner:
                assert inner is outer  # the nested run shares the outer deferral
                os.kill(os.getpid(), sig)
                time.sleep(0.01)
                assert calls == []  # held while the epoch runs
                with pytest.raises(_Requeued):
                    inner(2)
        assert calls == [sig]
        assert signal.getsignal(sig) is submitit_handler  # restored
        with _preemption_deferred() as after:
            after(1)
        assert calls == [sig]  # a new deferral starts clean
    finally:
        signal.signal(sig, original)

"""Shared helpers: compose the training config as asymbp-train would, and run the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from asymbp.config import CONFIG_DIR

REPO = Path(__file__).resolve().parent.parent


def compose_config(*overrides: str):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.fixture
def make_config(tmp_path):
    """compose(...) with outputs under the test's tmp dir and quiet, single-threaded runs."""

    def make(*overrides: str):
        base = [f"output_root={tmp_path / 'outputs'}", "threads=1", "progress=false"]
        return compose_config(*base, *overrides)

    return make


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m asymbp.train ARGS` in a subprocess, as a user would run it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "asymbp.train", *args],
        cwd=cwd or REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def children(pid: int) -> set[int]:
    """The process ids whose parent is `pid` (reads /proc)."""
    found = set()
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat_file.parent.name))
    return found


def alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie (reads /proc)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def orphans_after_killing(process, seconds: float = 20) -> list[int]:
    """SIGKILL a sweep's process and return its workers still alive `seconds` later (killed
    then, so that a failing test leaves nothing training)."""
    workers = children(process.pid)
    process.kill()
    process.communicate(timeout=60)
    deadline = time.monotonic() + seconds
    while any(map(alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.1)
    orphans = [pid for pid in workers if alive(pid)]
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    return orphans

"""asymbp-train under faults, concurrency and mistakes (issue 15): each test reproduces a defect.

Kills, full disks and concurrent writers are made real where a test can make them real: a process
killed by SIGKILL, a second process holding the lock, /dev/full behind a temporary file.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.metadata
import io
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import REPO, run_cli
from test_train import tiny_idx_dir

from asymbp import files, runs
from asymbp.build import ConfigError, validate
from asymbp.data import DatasetError
from asymbp.data.layout import DatasetWarning
from asymbp.train import run

#: Fashion-MNIST from the tiny copy of `fmnist` (40 training and 20 test images).
FMNIST = ["dataset=fashion_mnist", "dataset.expect.train=40", "dataset.expect.test=20"]
TINY = ["dataset=synthetic", "dataset.train_size=128", "dataset.test_size=64", "alignment=false"]


def fmnist(tmp_path: Path) -> Path:
    """A tiny Fashion-MNIST folder (four IDX files) under tmp_path."""
    (tmp_path / "fmnist").mkdir()
    return tiny_idx_dir(tmp_path / "fmnist")


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in run_dir.iterdir() if p.name != runs.LOCK}


class Interrupt(Exception):
    pass


def stop_at(stop_epoch: int):
    def callback(epoch):
        if epoch == stop_epoch:
            raise Interrupt

    return callback


# 1. force=true removes nothing until the replacement can start ----------------------------------


def test_force_with_a_wrong_dataset_root_keeps_the_finished_run(make_config, tmp_path):
    root = fmnist(tmp_path)
    args = [*FMNIST, "dataset.cache=false", "epochs=1", "model=mlp"]
    cfg = make_config(*args, f"dataset.root={root}")
    run(cfg)
    run_dir = runs.run_directory(cfg)
    before = snapshot(run_dir)
    assert runs.DONE in before
    forced = make_config(*args, f"dataset.root={tmp_path / 'nowhere'}", "force=true")
    assert runs.run_directory(forced) == run_dir  # dataset.root is not part of the identity
    with pytest.raises(DatasetError):
        run(forced)
    assert snapshot(run_dir) == before


def test_force_with_a_model_that_cannot_take_the_data_keeps_the_finished_run(make_config):
    cfg = make_config(*TINY, "epochs=1", "model=mlp")
    run(cfg)
    run_dir = runs.run_directory(cfg)
    before = snapshot(run_dir)
    # dataset.size is identity, so take the same directory with out_dir.
    bad = make_config(*TINY, "epochs=1", "model=lenet5", "force=true")
    with pytest.raises(ConfigError, match="lenet5"):
        run(bad, out_dir=run_dir)
    assert snapshot(run_dir) == before


# 2. one writer per run directory ------------------------------------------------------------------


def test_a_second_writer_is_refused_and_writes_nothing(make_config):
    cfg = make_config(*TINY, "epochs=1")
    run_dir = runs.run_directory(cfg)
    with runs.RunLock(run_dir):
        with pytest.raises(runs.RunBusy, match="being written by another process"):
            run(cfg)
        assert {p.name for p in run_dir.iterdir()} == {runs.LOCK}
    assert run(cfg)["epochs_completed"] == 1


@contextlib.contextmanager
def lock_held_elsewhere(run_dir: Path):
    """Another process holds the run directory's lock until the block ends (then it is killed)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from asymbp.runs import RunLock; lock = RunLock(Path(sys.argv[1])).__enter__(); "
         "print('locked', flush=True); time.sleep(600)", str(run_dir)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_killed_process_is_released(make_config):
    cfg = make_config(*TINY, "epochs=1")
    run_dir = runs.run_directory(cfg)
    with (
        lock_held_elsewhere(run_dir) as holder,
        pytest.raises(runs.RunBusy, match=f"pid {holder.pid}"),
    ):
        run(cfg)
    assert run(cfg)["epochs_completed"] == 1


@pytest.mark.slow
def test_cli_second_launch_says_why_and_exits_75(tmp_path):
    out = tmp_path / "outputs"
    args = [*TINY, "epochs=1", f"output_root={out}", "threads=1"]
    from conftest import compose_config

    run_dir = runs.run_directory(compose_config(*args))
    with lock_held_elsewhere(run_dir):
        result = run_cli(*args)
    assert result.returncode == 75, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("asymbp-train: ") and str(run_dir) in lines[0]
    assert not (run_dir / runs.DONE).exists()


# 3. identity does not depend on how a number is spelled ----------------------------------------


@pytest.mark.parametrize(
    "a, b",
    [
        ("feedback.scale=1", "feedback.scale=1.0"),
        ("divergence_loss=100", "divergence_loss=100.0"),
        ("optimizer.bm_lr=0.0005", "optimizer.bm_lr=5e-4"),
    ],
)
def test_the_run_directory_does_not_depend_on_number_spelling(make_config, a, b):
    assert runs.run_directory(make_config(*TINY, a)) == runs.run_directory(make_config(*TINY, b))


def test_numbers_still_tell_runs_apart(make_config):
    one = runs.run_directory(make_config(*TINY, "feedback.scale=1"))
    assert one != runs.run_directory(make_config(*TINY, "feedback.scale=1.5"))
    assert runs.identity(make_config(*TINY, "deterministic=true"))["alignment"] is False


def test_a_rule_declares_the_options_in_the_run_name(make_config, monkeypatch):
    from asymbp import feedback

    name = runs.run_directory(make_config(*TINY, "feedback=sc", "feedback.concordance=0.25")).name
    assert name.startswith("synthetic_paper_cnn_sc0.25_bn_bm_sgd_s0_")
    monkeypatch.setattr(feedback.FRSF, "name_options", ("magnitude",))
    name = runs.run_directory(make_config(*TINY, "feedback=frsf")).name
    assert name.startswith("synthetic_paper_cnn_frsfuniform_bn_bm_sgd_s0_")


# 4. threads: a resumed run keeps the thread count it started with -----------------------------


def test_a_run_resumed_under_another_thread_count_ends_as_if_uninterrupted(make_config):
    args = [*TINY, "epochs=3", "feedback=brsf", "deterministic=true", "alignment=true"]
    straight = run(make_config(*args, "exp_name=straight", "threads=1"))
    cfg = make_config(*args, "exp_name=resumed", "threads=1")
    with pytest.raises(Interrupt):
        run(cfg, on_epoch_end=stop_at(1))
    try:
        resumed = run(make_config(*args, "exp_name=resumed", "threads=2"))
    finally:
        torch.set_num_threads(1)
    assert resumed["threads"] == straight["threads"] == 1
    skip = {"wall_seconds"}
    assert {k: v for k, v in resumed.items() if k not in skip} == {
        k: v for k, v in straight.items() if k not in skip
    }
    assert (
        "resuming with the 1 threads the run started with"
        in (runs.run_directory(cfg) / runs.LOG).read_text()
    )


# 7. the code version is recorded; crossing it warns ---------------------------------------------


def test_metrics_record_the_code_version(make_config):
    metrics = run(make_config(*TINY, "epochs=1"))
    assert metrics["asymbp_version"] == importlib.metadata.version("asymbp")
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    if head.returncode == 0:
        assert metrics["git_commit"].removesuffix("-dirty") == head.stdout.strip()
    else:
        assert metrics["git_commit"] is None


def test_resuming_or_reusing_across_versions_warns(make_config):
    cfg = make_config(*TINY, "epochs=2")
    with pytest.raises(Interrupt):
        run(cfg, on_epoch_end=stop_at(1))
    checkpoint_path = runs.run_directory(cfg) / runs.CHECKPOINT
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    checkpoint["execution"]["asymbp_version"] = "0.0.1"
    torch.save(checkpoint, checkpoint_path)
    with pytest.warns(UserWarning, match="resumes across versions.*asymbp_version 0.0.1"):
        run(cfg)
    metrics_path = runs.run_directory(cfg) / runs.METRICS
    metrics = json.loads(metrics_path.read_text())
    metrics["git_commit"] = "0" * 40
    metrics_path.write_text(json.dumps(metrics))
    with pytest.warns(UserWarning, match="was finished by asymbp .*commit 0000"):
        run(cfg)


# 9. DONE without a readable metrics.json ----------------------------------------------------------


@pytest.mark.parametrize("damage", ["missing", "garbage", "empty_object"])
def test_done_without_readable_metrics_is_finished_from_its_checkpoint(make_config, damage):
    cfg = make_config(*TINY, "epochs=2")
    first = run(cfg)
    run_dir = runs.run_directory(cfg)
    history = (run_dir / runs.HISTORY).read_text()
    metrics_path = run_dir / runs.METRICS
    if damage == "missing":
        metrics_path.unlink()
    else:
        metrics_path.write_text("{" if damage == "garbage" else "{}")
    with pytest.warns(UserWarning, match="no readable metrics.json"):
        recovered = run(cfg)
    assert recovered["test_acc"] == first["test_acc"]
    assert recovered["epochs_completed"] == 2
    assert (run_dir / runs.HISTORY).read_text() == history  # nothing retrained
    assert json.loads(metrics_path.read_text())["test_acc"] == first["test_acc"]
    assert (run_dir / runs.DONE).exists()


# 10. checkpoints that are not ours start the run over --------------------------------------------


def _mlp_checkpoint(make_config) -> Path:
    other = make_config(*TINY, "epochs=2", "model=mlp", "exp_name=other")
    with pytest.raises(Interrupt):
        run(other, on_epoch_end=stop_at(1))
    return runs.run_directory(other) / runs.CHECKPOINT


@pytest.mark.parametrize("content", ["hello", "csv", "list", "missing_keys", "other_model"])
def test_a_foreign_checkpoint_starts_the_run_over(make_config, content):
    cfg = make_config(*TINY, "epochs=2")
    run_dir = runs.run_directory(cfg)
    run_dir.mkdir(parents=True)
    path = run_dir / runs.CHECKPOINT
    if content == "hello":
        path.write_text("hello")  # torch.load: KeyError: 101
    elif content == "csv":
        path.write_text("epoch,loss\n1,0.5\n")  # torch.load: IndexError
    elif content == "list":
        torch.save([1, 2, 3], path)
    elif content == "missing_keys":
        torch.save({"model": {}, "history": []}, path)
    else:
        path.write_bytes(_mlp_checkpoint(make_config).read_bytes())
    with pytest.warns(UserWarning, match="starting over"):
        metrics = run(cfg)
    assert metrics["epochs_completed"] == 2
    assert list(pd.read_csv(run_dir / runs.HISTORY)["epoch"]) == [1, 2]
    fresh = run(make_config(*TINY, "epochs=2", "exp_name=fresh"))
    assert metrics["test_acc"] == fresh["test_acc"]  # the start over is a clean start


# 11. full disks --------------------------------------------------------------------------------


class _DiskFullAfter(io.RawIOBase):
    """A file descriptor on a disk with `room` bytes left: like the kernel, a write that does not
    fit is cut short, and the next one fails with ENOSPC."""

    def __init__(self, fd: int, room: int):
        self.fd, self.room = fd, room

    def writable(self):
        return True

    def fileno(self):
        return self.fd

    def write(self, data):
        if self.room == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = os.write(self.fd, bytes(data[: self.room]))
        self.room -= n
        return n

    def close(self):
        if not self.closed:
            os.close(self.fd)
        super().close()


@pytest.fixture
def full_disk_under(monkeypatch):
    """Temporary files created in the folders of the returned list fill the disk after 1000
    bytes (a real full disk: some bytes written, then ENOSPC)."""
    folders: list[Path] = []
    full: set[int] = set()
    real_mkstemp, real_fdopen = tempfile.mkstemp, os.fdopen

    def mkstemp(*args, dir=None, **kwargs):
        fd, name = real_mkstemp(*args, dir=dir, **kwargs)
        if any(Path(dir).resolve() == f.resolve() for f in folders):
            full.add(fd)
        return fd, name

    def fdopen(fd, mode="r", *args, **kwargs):
        if fd in full:
            full.discard(fd)
            return io.BufferedWriter(_DiskFullAfter(fd, room=1000))
        return real_fdopen(fd, mode, *args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(os, "fdopen", fdopen)
    return folders


def test_a_full_cache_disk_warns_and_the_run_goes_on(make_config, tmp_path, full_disk_under):
    root = fmnist(tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    full_disk_under.append(cache)
    cfg = make_config(
        *FMNIST, f"dataset.root={root}", f"dataset.cache_dir={cache}",
        "model=mlp", "epochs=1",
    )  # fmt: skip
    with pytest.warns(DatasetWarning, match="No space left on device.*continuing without it"):
        metrics = run(cfg)
    assert metrics["epochs_completed"] == 1
    assert list(cache.iterdir()) == []  # no partial file, no temporary file


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 16 KiB tmpfs (needs root and a kernel that lets this process mount)."""
    folder = tmp_path / "tiny_disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_a_really_full_cache_disk_warns_and_the_run_goes_on(make_config, tmp_path, tiny_disk):
    root = fmnist(tmp_path)
    cfg = make_config(
        *FMNIST, f"dataset.root={root}", f"dataset.cache_dir={tiny_disk}",
        "model=mlp", "epochs=1",
    )  # fmt: skip
    with pytest.warns(DatasetWarning, match="continuing without it"):
        assert run(cfg)["epochs_completed"] == 1
    assert list(tiny_disk.iterdir()) == []


def test_a_full_run_disk_is_one_line_naming_the_directory(make_config, full_disk_under):
    cfg = make_config(*TINY, "epochs=1")
    run_dir = runs.run_directory(cfg)
    run_dir.mkdir(parents=True)
    full_disk_under.append(run_dir)
    with pytest.raises(runs.RunError) as error:
        run(cfg)
    message = str(error.value)
    assert "\n" not in message and str(run_dir) in message and "No space left" in message
    assert not (run_dir / runs.DONE).exists()


# 13-15. bad input: one line before any data is read, nothing written ---------------------------


@pytest.mark.parametrize(
    "override, message",
    [
        ("exp_name=" + "x" * 256, "exp_name="),
        ("seed=100000000000000000000000", "seed=100000000000000000000000 is out of range"),
        ("optimizer.step_size=0", "optimizer.step_size=0 is out of range: an integer >= 1"),
        ("optimizer=adam optimizer.betas=[1.5,0.999]", "optimizer.betas=[1.5, 0.999] is out of"),
        ("optimizer.name=rmsprop", "optimizer.name='rmsprop' is unknown: choose one of sgd, adam"),
        ("optimizer.schedule=cosin", "optimizer.schedule='cosin' is unknown: did you mean cosine?"),
        ("norm.scope=some", "norm.scope='some' is out of range: one of all, weights, hidden"),
        ("+lr=1", "lr is not a key of the config: did you mean optimizer.lr?"),
        ("+optimizer.eps=1e-8", "optimizer=sgd has no option eps: its options are momentum"),
        ("+norm.eps=1e-5", "norm.eps is not a key of norm bn_bm"),
        ("+model.depth=2", "model=paper_cnn has no option depth: its options are"),
        ("+feedback.decay=2", "feedback=usf has no option decay: its options are scale"),
        ("exp_name=../../x", "exp_name='../../x' is out of range: a relative folder name"),
        ("exp_name=/tmp/x", "exp_name='/tmp/x' is out of range: a relative folder name"),
        ("exp_name=.hidden", "exp_name='.hidden' is out of range: a relative folder name"),
    ],
)
def test_bad_config_is_refused_before_the_data_is_read(make_config, tmp_path, override, message):
    # The dataset cannot be read: an error about it would mean the check came too late.
    missing = ["dataset=fashion_mnist", f"dataset.root={tmp_path / 'none'}"]
    cfg = make_config(*missing, *override.split())
    with pytest.raises(ConfigError) as error:
        run(cfg)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "outputs").exists() and not (tmp_path.parent / "x").exists()


@pytest.mark.slow
def test_unknown_key_on_the_cli_names_the_right_key(tmp_path):
    result = run_cli("+lr=1", f"output_root={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "asymbp-train: error: lr is not a key of the config: did you mean optimizer.lr?"
    ]
    assert list(tmp_path.iterdir()) == []


def test_nested_exp_names_stay_inside_output_root(make_config):
    cfg = make_config(*TINY, "exp_name=study/part1")
    validate(cfg)
    assert runs.run_directory(cfg).parent.parent.name == "study"


@pytest.mark.slow
@pytest.mark.parametrize("case", ["output_is_a_file", "model_cannot_take_the_input"])
def test_cli_bad_environment_is_one_line_and_writes_nothing(tmp_path, case):
    if case == "output_is_a_file":
        (tmp_path / "file").write_text("")
        args = [f"output_root={tmp_path / 'file'}"]
        expected = f"{tmp_path / 'file'} is not a folder"
    else:
        args = [f"output_root={tmp_path / 'out'}", "model=lenet5"]
        expected = "lenet5 takes 28x28 or 32x32 images, got 8x8"
    result = run_cli(*args, "epochs=1")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("asymbp-train: error: ") and expected in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_output_folder_is_refused_before_the_data(make_config, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    cfg = make_config(*TINY, f"output_root={locked}")
    with pytest.raises(runs.RunError, match="is not writable"):
        run(cfg)


# 16-17. temporary files and permissions --------------------------------------------------------


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temporary_files_of_dead_writers_are_removed(make_config):
    cfg = make_config(*TINY, "epochs=1")
    run_dir = runs.run_directory(cfg)
    run_dir.mkdir(parents=True)
    host = socket.gethostname()
    dead = run_dir / f".checkpoint.pt.asymbp-{host}-{_dead_pid()}-ab12_xyz.tmp"
    alive = run_dir / f".history.csv.asymbp-{host}-{os.getppid()}-cd34_xyz.tmp"
    elsewhere = run_dir / f".history.csv.asymbp-otherhost-{_dead_pid()}-ef56_xyz.tmp"
    foreign = run_dir / ".notes.tmp"
    for path in (dead, alive, elsewhere, foreign):
        path.write_bytes(b"x" * 100)
    run(cfg)
    assert not dead.exists()
    assert alive.exists() and elsewhere.exists() and foreign.exists()
    assert dead.name in (run_dir / runs.LOG).read_text()


def test_a_stale_cache_temporary_file_is_removed_when_the_cache_is_written(make_config, tmp_path):
    root, cache = fmnist(tmp_path), tmp_path / "cache"
    args = [*FMNIST, f"dataset.root={root}", f"dataset.cache_dir={cache}"]
    run(make_config(*args, "model=mlp", "epochs=1"))
    (cached,) = cache.iterdir()
    stale = cache / f".{cached.name}.asymbp-{socket.gethostname()}-{_dead_pid()}-ab12_xyz.tmp"
    stale.write_bytes(b"x" * 100)
    cached.unlink()
    run(make_config(*args, "model=mlp", "epochs=1", "exp_name=again"))
    assert [p.name for p in cache.iterdir()] == [cached.name]


def test_a_write_killed_midway_leaves_a_temporary_file_the_next_run_removes(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    writer = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from asymbp.files import atomic_write; "
         "atomic_write(Path(sys.argv[1]) / 'checkpoint.pt', lambda h: (h.write(b'x'), "
         "print('writing', flush=True), time.sleep(600)))", str(folder)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert writer.stdout.readline().strip() == "writing"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    left = list(folder.iterdir())
    assert len(left) == 1 and left[0].name.startswith(".checkpoint.pt.asymbp-")
    assert files.remove_stale_temps(folder) == left
    assert list(folder.iterdir()) == []


def test_files_follow_the_umask(make_config, tmp_path):
    root = fmnist(tmp_path)
    cache = tmp_path / "cache"
    previous = os.umask(0o002)
    try:
        cfg = make_config(
            *FMNIST, f"dataset.root={root}", f"dataset.cache_dir={cache}",
            "model=mlp", "epochs=1",
        )  # fmt: skip
        run(cfg)
    finally:
        os.umask(previous)
    run_dir = runs.run_directory(cfg)
    written = [*run_dir.iterdir(), *cache.iterdir()]
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in written}
    assert set(modes.values()) == {0o664}, modes


# 18. Ctrl-C ---------------------------------------------------------------------------------


def ctrl_c_after_the_first_checkpoint(args: list[str], out: Path) -> str:
    """Run `python -m asymbp.train ARGS`, press Ctrl-C once a checkpoint exists under `out`;
    check exit code 130 and no traceback; return the last line of stderr."""
    command = [sys.executable, "-m", "asymbp.train", *args, f"output_root={out}"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    proc = subprocess.Popen(command, cwd=REPO, text=True, **pipes)
    deadline = time.monotonic() + 120
    while not list(out.rglob(runs.CHECKPOINT)) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    return stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_ctrl_c_prints_one_line_exits_130_and_the_run_resumes(tmp_path):
    out = tmp_path / "outputs"
    last = ctrl_c_after_the_first_checkpoint(
        [*TINY, "epochs=400", "threads=1", "progress=false"], out
    )
    assert last.startswith("asymbp-train: interrupted;")
    (run_dir,) = [p.parent for p in out.rglob(runs.CHECKPOINT)]
    done = len(pd.read_csv(run_dir / runs.HISTORY))
    assert not (run_dir / runs.DONE).exists() and done >= 1
    checkpoint = torch.load(run_dir / runs.CHECKPOINT, weights_only=True)
    assert len(checkpoint["history"]) == done  # resumable from where it stopped

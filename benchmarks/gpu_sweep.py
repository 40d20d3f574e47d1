"""Sweep throughput on one machine: runs per hour of the `paper_table` grid at N runs at a time.

Conditions: `asymbp-train -m experiment=paper_table` (5 rules x 4 stabilizations x 3 seeds = 60
runs) on the full Fashion-MNIST (54,000 training, 6,000 validation, 10,000 test images) with
LeNet-5 at 32x32 (`model=lenet5 dataset.image_size=32`), batch 64, 24 epochs, alignment metrics
on (the defaults), launched with `hydra/launcher=gpu hydra.launcher.n_jobs=N` (asymbp.jobs gives
each run cores / N threads and its GPU). For each N the sweep runs until each of its first N runs,
all training at once, has completed --epochs-per-run epochs (or --timeout passes), then is
stopped. From those runs' history.csv:
- `epoch (s)`: the median wall time of one epoch (training, validation and test evaluation,
  alignment metrics, checkpoint) with N runs at once, the first epoch left out (cuDNN's
  autotuning, first allocations);
- `runs/h`: N runs / (24 x epoch time), the steady rate of a long sweep;
- `start-up (s)`: from the sweep's launch until the last of the N runs starts training (workers
  importing torch, CUDA contexts, data loading, model building; paid once per worker);
- `grid (min)`: the 60-run grid projected as start-up + ceil(60 / N) waves of 24 epochs (a
  projection: later runs reuse their worker, but each loads its data and builds its model again);
  --full N runs the whole grid at N to the end and times it.
GPU memory per run: the most that any one process held (nvidia-smi, CUDA context included),
sampled twice a second. `vs CPU`: runs/h over the same figure on this project's 2-core CPU
machine (--cpu-runs-per-hour; benchmarks/README.md).

    python benchmarks/gpu_sweep.py --dataset-root /usr/share/datasets/fashion-mnist
        [--device cuda] [--concurrency 1 4 8 16] [--epochs-per-run 3] [--full N]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from tabulate import tabulate

REPO = Path(__file__).resolve().parent.parent
#: The grid: paper_table's sweep (rules x stabilizations x seeds) and its epochs.
GRID_RUNS, EPOCHS = 5 * 4 * 3, 24
#: Runs per hour of the same grid on this project's 2-core CPU machine (no GPU), two runs at a time
#: with one thread each (7.2 s per epoch): `--device cpu --concurrency 2 --epochs-per-run 4`
#: (benchmarks/README.md, 2026-12-04).
CPU_RUNS_PER_HOUR = 41.6
#: Seconds between two looks at the runs' histories (and GPU memory samples).
POLL_SECONDS = 0.5


def sweep_command(args, n: int, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "asymbp.train", "-m", "experiment=paper_table",
        "model=lenet5", "dataset=fashion_mnist", "dataset.image_size=32",
        f"dataset.root={args.dataset_root}", f"data_root={out.parent / 'data'}",
        f"epochs={EPOCHS}", f"device={args.device}", "progress=false",
        "hydra/launcher=gpu", f"hydra.launcher.n_jobs={n}",
        f"output_root={out}", "exp_name=grid",
    ]  # fmt: skip


def histories(out: Path) -> dict[Path, pd.DataFrame]:
    """The history.csv of every run of a sweep so far (one being replaced is read next time)."""
    found = {}
    for path in out.glob("grid/*/history.csv"):
        with contextlib.suppress(OSError, pd.errors.EmptyDataError, pd.errors.ParserError):
            found[path.parent] = pd.read_csv(path)
    return found


def gpu_memory_per_process() -> dict[int, int]:
    """MiB of GPU memory per process id, from nvidia-smi ({} where there is none)."""
    if shutil.which("nvidia-smi") is None:
        return {}
    query = ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]
    try:
        lines = subprocess.run(query, capture_output=True, text=True, timeout=10).stdout
    except subprocess.TimeoutExpired:
        return {}
    usage = {}
    for line in lines.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            usage[int(parts[0])] = int(parts[1])
    return usage


def stop(process: subprocess.Popen) -> None:
    """End the sweep and its workers (its process group), then wait until the GPU is free."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    for _ in range(30):
        if not gpu_memory_per_process():
            return
        time.sleep(1)


def measure(args, n: int, out: Path, until_done: bool = False) -> dict:
    """Run the sweep at n runs at a time until its first n runs have args.epochs_per_run epochs
    each (or, with until_done, to its end)."""
    log_path = out.parent / f"sweep_n{n}.log"
    start = time.perf_counter()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            sweep_command(args, n, out), cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    first_row: dict[Path, float] = {}  # run -> seconds from launch to its first epoch's end
    peak_mib, limit = 0, (args.full_timeout if until_done else args.timeout)
    while True:
        time.sleep(POLL_SECONDS)
        now = time.perf_counter() - start
        runs = histories(out)
        for run, history in runs.items():
            if len(history) and run not in first_row:
                first_row[run] = now
        peak_mib = max([peak_mib, *gpu_memory_per_process().values()])
        ready = sum(len(h) >= args.epochs_per_run for h in runs.values()) >= n
        if process.poll() is not None or now >= limit or (ready and not until_done):
            break
    ended = process.poll()
    stop(process)
    if ended not in (None, 0) and not first_row:
        tail = "\n".join(log_path.read_text().splitlines()[-15:])
        sys.exit(f"{tail}\ngpu_sweep.py: error: the sweep at N={n} failed (exit {ended})")
    runs = histories(out)
    # The first n runs to start trained side by side; their epochs after the first are timed.
    concurrent = sorted(first_row, key=first_row.get)[:n]
    epoch_times = [
        statistics.median(runs[run]["seconds"].iloc[1:]) for run in concurrent
        if run in runs and len(runs[run]) >= 2
    ]  # fmt: skip
    epoch_s = statistics.median(epoch_times) if epoch_times else math.nan
    startups = [first_row[run] - runs[run]["seconds"].iloc[0] for run in concurrent if run in runs]
    return {
        "n": n,
        "seconds": now,
        "timed_runs": len(epoch_times),
        "epoch_s": epoch_s,
        "runs_per_hour": n * 3600 / (EPOCHS * epoch_s),
        "startup_s": max(startups) if startups else math.nan,
        "peak_mib": peak_mib,
        "finished": len(list(out.glob("grid/*/DONE"))),
        "exit": ended,
    }


def warm_cache(args, root: Path) -> None:
    """Decode Fashion-MNIST into asymbp's cache once, so that no measurement pays for it."""
    command = [
        sys.executable, "-m", "asymbp.train", "model=lenet5", "dataset=fashion_mnist",
        "dataset.image_size=32", f"dataset.root={args.dataset_root}", f"data_root={root / 'data'}",
        "epochs=1", "train_subset=1000", "device=cpu", "progress=false", "alignment=false",
        f"output_root={root / 'warm'}",
    ]  # fmt: skip
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset-root", required=True, help="folder of the four IDX .gz files")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--epochs-per-run", type=int, default=3, help="epochs timed per run, + 1")
    parser.add_argument("--timeout", type=float, default=150.0, help="seconds per N at most")
    parser.add_argument("--full", type=int, default=None, help="then run the whole grid at N")
    parser.add_argument("--full-timeout", type=float, default=600.0)
    parser.add_argument("--cpu-runs-per-hour", type=float, default=CPU_RUNS_PER_HOUR)
    parser.add_argument("--keep", type=Path, default=None, help="keep run folders here")
    args = parser.parse_args()
    if args.epochs_per_run < 2:
        parser.error("--epochs-per-run must be >= 2 (the first epoch is not timed)")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("gpu_sweep.py: error: no CUDA device; use --device cpu on a CPU machine")

    root = args.keep or Path(tempfile.mkdtemp(prefix="asymbp_gpu_sweep_"))
    root.mkdir(parents=True, exist_ok=True)
    warm_cache(args, root)
    where = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU"
    print(
        f"torch {torch.__version__}, {where}, {os.cpu_count()} cores; paper_table grid "
        f"({GRID_RUNS} runs), LeNet-5 32px, full Fashion-MNIST, batch 64, {EPOCHS} epochs; "
        f"epochs 2-{args.epochs_per_run} of the first N runs timed",
        flush=True,
    )
    rows = []
    for n in args.concurrency:
        result = measure(args, n, root / f"n{n}")
        print(f"N={n}: {result}", flush=True)
        waves = math.ceil(GRID_RUNS / n)
        projected = result["startup_s"] + waves * EPOCHS * result["epoch_s"]
        rows.append([
            n, result["timed_runs"], f"{result['epoch_s']:.2f}", f"{result['runs_per_hour']:.0f}",
            result["peak_mib"] or "n/a", f"{result['runs_per_hour'] / args.cpu_runs_per_hour:.1f}x",
            f"{result['startup_s']:.0f}", f"{projected / 60:.1f}",
        ])  # fmt: skip
    headers = [
        "N at once", "runs timed", "epoch (s)", "runs/h", "GPU MiB per run (peak)",
        "vs 2-core CPU", "start-up (s)", "grid, projected (min)",
    ]  # fmt: skip
    print(tabulate(rows, headers, tablefmt="github"))
    if args.full:
        result = measure(args, args.full, root / f"full_n{args.full}", until_done=True)
        print(
            f"whole grid at N={args.full}: {result['finished']}/{GRID_RUNS} runs finished in "
            f"{result['seconds'] / 60:.2f} min (sweep exit {result['exit']})"
        )
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

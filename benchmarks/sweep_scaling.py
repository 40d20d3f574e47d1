"""Sweep throughput: Hydra's basic launcher (jobs one after the other, torch's default threads)
against the joblib launcher (n_jobs=2, one torch thread per job) on the same 8-job sweep.

Conditions: the machine's cores (2 here), `asymbp-train -m feedback=bp,usf,brsf,frsf seed=0,1`,
uSF-style defaults otherwise (paper_cnn, BN+BM, SGD), a fresh output folder and `force=true` for
every sweep, wall time of the whole command including Python start-up. Two workloads:
  digits:         the bundled 8x8 digits, `--digits-epochs` epochs: small jobs where per-job
                  overhead and single-threaded work dominate;
  fashion_mnist:  Fashion-MNIST 28x28, a `--fashion-subset` stratified training subset,
                  `--fashion-epochs` epochs, where two threads already parallelize convolutions.
The two launchers alternate `--repeats` times per workload; medians are printed.

    python benchmarks/sweep_scaling.py [--repeats 2] [--digits-epochs 60] [--fashion-epochs 1]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from asymbp.data import DEBIAN_FASHION_MNIST

SWEEP = ["-m", "feedback=bp,usf,brsf,frsf", "seed=0,1", "force=true", "progress=false"]
JOBS = 8
LAUNCHERS = {"basic": [], "joblib (n_jobs=2)": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]}
FASHION_ROOT = DEBIAN_FASHION_MNIST


def sweep_seconds(workload: list[str], launcher: list[str]) -> float:
    with tempfile.TemporaryDirectory(prefix="asymbp-sweep-") as out:
        command = [sys.executable, "-m", "asymbp.train", *SWEEP, *workload, *launcher]
        start = time.perf_counter()
        subprocess.run([*command, f"output_root={out}"], check=True, capture_output=True)
        elapsed = time.perf_counter() - start
        finished = len(list(Path(out).rglob("DONE")))
    if finished != JOBS:
        raise RuntimeError(f"expected {JOBS} finished runs, found {finished}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--digits-epochs", type=int, default=60)
    parser.add_argument("--fashion-epochs", type=int, default=1)
    parser.add_argument("--fashion-subset", type=int, default=4000)
    args = parser.parse_args()
    workloads = {
        f"digits, {args.digits_epochs} epochs": ["dataset=digits", f"epochs={args.digits_epochs}"],
        f"fashion_mnist, {args.fashion_subset} images, {args.fashion_epochs} epoch(s)": [
            "dataset=fashion_mnist", f"dataset.root={FASHION_ROOT}",
            f"train_subset={args.fashion_subset}", f"epochs={args.fashion_epochs}",
        ],
    }  # fmt: skip
    print(f"{JOBS}-job sweep, {args.repeats} alternating repeats, wall time of the whole command")
    print("| workload | basic jobs/min | joblib jobs/min | joblib / basic |")
    print("|---|---|---|---|")
    for name, workload in workloads.items():
        times = {launcher: [] for launcher in LAUNCHERS}
        for _ in range(args.repeats):
            for launcher, overrides in LAUNCHERS.items():
                times[launcher].append(sweep_seconds(workload, overrides))
        basic, joblib = (JOBS / (statistics.median(t) / 60) for t in times.values())
        print(f"| {name} | {basic:.1f} | {joblib:.1f} | {joblib / basic:.2f} |", flush=True)


if __name__ == "__main__":
    main()

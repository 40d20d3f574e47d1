"""Reproduce the paper's experiments end to end: the sweeps of the presets, then the report.

    python scripts/reproduce_paper.py --profile demo|cpu|full|fashion_full [--datasets D ...]
        [--seeds N]
        [--launcher basic|joblib|submitit_local|submitit_slurm] [--data-root DIR] [--out DIR]
        [--epochs N] [--train-subset N]

Every run lands in <out>/runs/<profile>/ (one folder per configuration, so presets that share a
configuration share its run) and the report (CSVs, tables, figures) in <out>/report/. Interrupted
and rerun, it trains only what has no DONE marker yet and ends with the same report.

Profiles (times measured on 2 CPU cores; see docs/sweeps.md):
  demo  digits only, paper_table + paper_concordance, 1 seed, 10 epochs: about 1 minute.
  cpu   digits (full, 20 epochs) and Fashion-MNIST (a stratified 4000-image training subset,
        4 epochs, 5% validation hold-out), all three presets, 3 seeds, joblib: about 1 hour.
  full  the paper's 15 datasets plus Fashion-MNIST and digits at 60 epochs, all presets, 3 seeds:
        meant for a GPU or a SLURM cluster (--launcher submitit_slurm).
  fashion_pilot  experiment=biotorch_fashion (every rule's lr over 1e-4..1e-1, bm_lr over
        1e-5..3e-3, biotorch's draws, BN+BM, the arms of claims 1 and 2; 147 jobs, 145 when
        the pilot ran: DFA's 1e-5 and 3e-5 came after) at one seed on a stratified 12,000-image
        subset for 12 epochs (lr / 10 at 6 and 9), reported at the best-validation epoch with
        --select: the rates each condition chooses on validation, which biotorch_fashion_cpu
        then fixes. Its report is kept in docs/results/fashion_pilot.
  fashion_full  biotorch's protocol on the full Fashion-MNIST (54,000 train, 6,000 validation,
        10,000 test) with experiment=biotorch_fashion_cpu: the 23 conditions of biotorch_fashion
        at the rates fashion_pilot chose (brSF, FA and DFA also one step lower), 3 seeds, 24
        epochs, lr / 10 at epochs 12 and 18 (biotorch: 100, at 50 and 75). On a GPU:
        experiment=biotorch_fashion with its 100 epochs.
  fashion_protocol  biotorch's full protocol (100 epochs, lr / 10 at 50 and 75) for bp, FA, uSF,
        brSF, frSF and DFA without BN/BM, one seed each at the rates fashion_full chose (about
        17 minutes a run on one core), reported at the best-validation epoch and, like for like with
        biotorch, at the best test epoch (anchors at --metric best_test).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from asymbp.config import CONFIG_DIR
from asymbp.data import DEBIAN_FASHION_MNIST, PAPER_DATASETS, DatasetError, load_dataset
from asymbp.report.cli import main as aggregate

LAUNCHERS = {
    "basic": [],
    "joblib": ["hydra/launcher=joblib"],
    "submitit_local": ["hydra/launcher=submitit_local"],
    "submitit_slurm": ["hydra/launcher=slurm"],
}


@dataclass
class Profile:
    datasets: tuple[str, ...]
    presets: tuple[str, ...]
    seeds: int
    launcher: str
    #: overrides for every run, then per dataset (these win)
    overrides: tuple[str, ...] = ()
    per_dataset: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: asymbp-aggregate options for the report (e.g. --select)
    report: tuple[str, ...] = ()


ALL_PRESETS = ("paper_table", "paper_concordance", "paper_magnitude")
PROFILES = {
    "demo": Profile(("digits",), ("paper_table", "paper_concordance"), 1, "joblib", ("epochs=10",)),
    "cpu": Profile(
        ("digits", "fashion_mnist"),
        ALL_PRESETS,
        3,
        "joblib",
        per_dataset={
            "digits": ("epochs=20",),
            "fashion_mnist": ("epochs=4", "train_subset=4000", "val_fraction=0.05"),
        },
    ),
    "full": Profile(
        (*PAPER_DATASETS, "fashion_mnist", "digits"),
        ALL_PRESETS,
        3,
        "basic",
        ("epochs=60",),
        per_dataset={"timit": ("model=mlp",)},
    ),
    "fashion_pilot": Profile(
        ("fashion_mnist",),
        ("biotorch_fashion",),
        1,
        "joblib",
        ("epochs=12", "train_subset=12000", "optimizer.milestones=[6,9]"),
        report=("--select", "optimizer.lr", "--select", "optimizer.bm_lr", "--metric", "best_val"),
    ),
    "fashion_full": Profile(
        ("fashion_mnist",),
        ("biotorch_fashion_cpu",),
        3,
        "joblib",
        ("epochs=24", "optimizer.milestones=[12,18]"),  # see the docstring for the sizing
        report=("--select", "optimizer.lr", "--select", "optimizer.bm_lr"),
    ),
    "fashion_protocol": Profile(
        ("fashion_mnist",),
        ("biotorch_fashion_protocol",),
        1,
        "joblib",
        report=("--metric", "best_val"),
    ),
}


def dataset_overrides(name: str, data_root: str | None) -> list[str] | None:
    """Overrides that find the dataset's files, or None (with a line saying why) when missing."""
    options = []
    if name == "fashion_mnist" and DEBIAN_FASHION_MNIST.is_dir():
        default_root = Path(data_root or "data") / "fashion_mnist"
        if not default_root.is_dir():
            options.append(f"dataset.root={DEBIAN_FASHION_MNIST}")
    try:
        from hydra import compose, initialize_config_dir
        from omegaconf import OmegaConf

        root = [f"data_root={data_root}"] if data_root else []
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("train", overrides=[f"dataset={name}", *root, *options])
        loader_options = OmegaConf.to_container(cfg.dataset, resolve=True)
        loader_options.pop("name")
        load_dataset(name, **loader_options)  # decodes once; the runs then read the cache
    except DatasetError as error:
        print(f"skipping {name}: {error}", flush=True)
        return None
    return options


def sweep_command(args, profile: Profile, preset: str, dataset: str, extra: list[str]) -> list[str]:
    seeds = ",".join(str(s) for s in range(args.seeds or profile.seeds))
    command = [
        sys.executable, "-m", "asymbp.train", "-m", f"experiment={preset}", f"dataset={dataset}",
        f"seed={seeds}", f"exp_name={args.profile}", f"output_root={Path(args.out) / 'runs'}",
        "progress=false", "sweep_report=false",  # the script aggregates every preset at the end
        *LAUNCHERS[args.launcher or profile.launcher], *profile.overrides,
        *profile.per_dataset.get(dataset, ()), *extra,
    ]  # fmt: skip
    if args.data_root:
        command.append(f"data_root={args.data_root}")
    if args.epochs:
        command.append(f"epochs={args.epochs}")
    if args.train_subset:
        command.append(f"train_subset={args.train_subset}")
    return command


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), required=True)
    parser.add_argument("--datasets", nargs="+", help="override the profile's datasets")
    parser.add_argument("--seeds", type=int, help="number of seeds (0..N-1)")
    parser.add_argument("--launcher", choices=sorted(LAUNCHERS))
    parser.add_argument("--data-root", help="folder holding the datasets' folders")
    parser.add_argument("--out", help="default: outputs/reproduce_<profile>")
    parser.add_argument("--epochs", type=int, help="override every run's epochs (e.g. for a test)")
    parser.add_argument("--train-subset", type=int, help="train on a stratified subset of N")
    args = parser.parse_args(argv)
    args.out = args.out or f"outputs/reproduce_{args.profile}"
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    profile = PROFILES[args.profile]
    failures = []
    for dataset in args.datasets or profile.datasets:
        extra = dataset_overrides(dataset, args.data_root)
        if extra is None:
            continue
        for preset in profile.presets:
            command = sweep_command(args, profile, preset, dataset, extra)
            print(f"== {preset} on {dataset}: {' '.join(command[2:])}", flush=True)
            if subprocess.run(command).returncode != 0:
                failures.append(f"{preset} on {dataset}")
    runs_dir = Path(args.out) / "runs" / args.profile
    if not runs_dir.is_dir():
        print(f"reproduce_paper: no runs in {runs_dir}: no dataset was found", file=sys.stderr)
        return 2
    report = [str(runs_dir), "--out", str(Path(args.out) / "report"), *profile.report]
    status = aggregate(report)
    for failure in failures:
        print(f"reproduce_paper: sweep failed: {failure}", file=sys.stderr)
    return 1 if failures else status


if __name__ == "__main__":
    sys.exit(main())

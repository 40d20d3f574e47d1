"""Peer comparison: seconds per epoch of biotorch's own pipeline vs asymbp-train, LeNet-5 + uSF.

Conditions: CPU, float32, `--threads` torch threads on both sides (default 2), Fashion-MNIST (60000
train / 10000 test, or the same stratified `--train-subset` on both sides), biotorch's LeNetMNIST
(conv5x5-6, max-pool, conv5x5-16, max-pool, conv5x5-120, fc-84, fc-10, ReLU; asymbp's
`model=lenet5` is the same network), uSF feedback V = sign(W) scaled by the Xavier std on both
sides (biotorch's `usf`; asymbp `feedback=usf feedback.scale=init_std`), no BN, SGD with momentum
0.9 and weight decay, constant learning rate, the same batch size (defaults: batch 128 and weight
decay 1e-4 as in biotorch's LeNet configs; lr 0.01, as their 0.1 makes biotorch's run diverge
here), torch seed `--seed` on both sides. Initializations differ: biotorch's is Xavier-uniform with
zero biases, asymbp's lenet5 keeps PyTorch's default.

- biotorch 0.0.16: its `FashionMNIST` dataset (torchvision's, with its per-item transforms:
  PIL resize to 32x32, ToTensor, Normalize) and DataLoaders (shuffled, drop_last, `--num-workers`,
  default 0 as in its configs), `models.usf.le_net_mnist`, its SGD builder and cross-entropy, and
  per epoch `training.functions.train` then `training.functions.test` on the test set: what its
  Trainer does each epoch, minus TensorBoard logging and the two `torch.save` of the model.
- asymbp: `asymbp.train.run` in-process (what `asymbp-train` runs) with `dataset=fashion_mnist
  model=lenet5 feedback=usf norm=none`, `val_fraction=0`, `alignment=false`; its per-epoch figure
  is history.csv's `seconds`: one training epoch, then the test-set evaluation (28x28 inputs,
  zero-padded by 2 in the first convolution, where biotorch resizes them to 32x32).

A timed epoch is thus, on both sides, one training pass plus one evaluation of the 10000 test
images. Data set-up is timed apart: biotorch's dataset construction (torchvision reads the raw IDX
files, un-gzipped once beforehand into its folder layout, untimed) and asymbp's IDX loading; the
rest of `run` outside its epochs (data, model, checkpoint and run files) is reported too.
Pipelines alternate within each repeat (biotorch first), medians over `--repeats`; the ratio is
biotorch's seconds per epoch over asymbp's. Other jobs on the machine slow both sides unevenly
(with 2 threads a descheduled thread stalls each parallel region), so the per-repeat figures,
the fastest repeat and the CPU pressure are printed too.

    pip install --no-deps -r benchmarks/peer_requirements.txt   # biotorch, into asymbp's venv
    python benchmarks/peer_biotorch.py [--repeats 3] [--epochs 1] [--train-subset N]
        [--batch-size 128] [--lr 0.01] [--threads 2] [--num-workers 0]
        [--root /usr/share/datasets/fashion-mnist]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import importlib
import importlib.metadata
import io
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from asymbp.data import DEBIAN_FASHION_MNIST, load_dataset, stratified_split
from asymbp.train import CONFIG_DIR, run

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
INSTALL = ".venv/bin/pip install --no-deps -r benchmarks/peer_requirements.txt"


@dataclass
class Result:
    """One repeat of one pipeline."""

    epoch_seconds: list[float]
    test_error: float
    data_seconds: float
    other_seconds: float = float("nan")  # asymbp: run() time outside its epochs
    extra: dict = field(default_factory=dict)


def cpu_pressure() -> str:
    """Linux PSI: the share of the last 60 s in which some runnable task waited for a CPU (other
    jobs on the machine slow both pipelines; a high figure means noisy timings)."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return "n/a"
    return dict(item.split("=") for item in line.split()[1:]).get("avg60", "n/a") + "%"


def import_biotorch():
    """biotorch's modules used here, or exit 2 with the install command."""
    names = ("datasets.fashion_mnist", "models.usf", "training.functions", "benchmark.optimizers")
    try:
        return [importlib.import_module(f"biotorch.{name}") for name in names]
    except ImportError as error:
        print(
            f"peer_biotorch.py: error: biotorch is not importable ({error}); "
            f"install it with: {INSTALL}",
            file=sys.stderr,
        )
        sys.exit(2)


def torchvision_layout(source: Path, root: Path) -> Path:
    """`root`/FashionMNIST/raw/ holding the four IDX files un-gzipped, as torchvision expects
    after its own download (so it finds them and downloads nothing)."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for stem in IDX_FILES:
        plain, packed = source / stem, source / f"{stem}.gz"
        if plain.is_file():
            shutil.copyfile(plain, raw / stem)
        else:
            with gzip.open(packed, "rb") as src, open(raw / stem, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return root


def subset_indices(labels: torch.Tensor, subset: int | None, seed: int) -> torch.Tensor | None:
    """The training indices asymbp keeps for `train_subset=subset` with val_fraction=0."""
    if subset is None or subset >= labels.numel():
        return None
    return stratified_split(labels, subset / labels.numel(), seed)[1]


def biotorch_repeat(modules, args, root: Path, indices) -> Result:
    fashion_mnist, usf, functions, optimizers = modules
    quiet = contextlib.redirect_stdout(io.StringIO())
    start = time.perf_counter()
    with quiet:
        dataset = fashion_mnist.FashionMNIST(target_size=32, dataset_path=str(root))
    if indices is not None:
        dataset.train_dataset = torch.utils.data.Subset(dataset.train_dataset, indices.tolist())
    train_loader = dataset.create_train_dataloader(args.batch_size, num_workers=args.num_workers)
    test_loader = dataset.create_test_dataloader(args.batch_size, num_workers=args.num_workers)
    data_seconds = time.perf_counter() - start

    torch.manual_seed(args.seed)
    with contextlib.redirect_stdout(io.StringIO()):
        model = usf.le_net_mnist(num_classes=10)
    optimizer = optimizers.create_optimizer(
        {"type": "SGD", "lr": args.lr, "momentum": 0.9, "weight_decay": args.weight_decay}, model
    )
    loss_function = torch.nn.CrossEntropyLoss()  # biotorch's select_loss_function("cross_entropy")
    epoch_seconds, test_seconds, accuracy = [], [], float("nan")
    for epoch in range(args.epochs):
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            functions.train(
                model, "usf", loss_function, optimizer, train_loader, "cpu", epoch,
                multi_gpu=False, top_k=5, display_iterations=500,
            )  # fmt: skip
            middle = time.perf_counter()
            accuracy, _ = functions.test(model, loss_function, test_loader, "cpu", top_k=5)
        epoch_seconds.append(time.perf_counter() - start)
        test_seconds.append(time.perf_counter() - middle)
    return Result(
        epoch_seconds,
        1.0 - float(accuracy) / 100.0,
        data_seconds,
        extra={"test_seconds": sum(test_seconds) / len(test_seconds)},
    )


def asymbp_config(args, output_root: str):
    overrides = [
        "dataset=fashion_mnist", f"dataset.root={args.root}", "model=lenet5", "feedback=usf",
        "feedback.scale=init_std", "norm=none", "optimizer=sgd", f"optimizer.lr={args.lr}",
        "optimizer.momentum=0.9", f"optimizer.weight_decay={args.weight_decay}",
        "optimizer.schedule=none", f"batch_size={args.batch_size}", f"epochs={args.epochs}",
        "val_fraction=0", f"train_subset={args.train_subset or 'null'}", "alignment=false",
        f"seed={args.seed}", f"threads={args.threads}", "device=cpu", "progress=false",
        "force=true", f"output_root={output_root}",
    ]  # fmt: skip
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


def load_configured(cfg):
    """The dataset of cfg, loaded with its config's keys (their one source: the YAML)."""
    options = OmegaConf.to_container(cfg.dataset, resolve=True)
    return load_dataset(options.pop("name"), **options)


def asymbp_repeat(cfg, args, out_dir: Path) -> Result:
    start = time.perf_counter()
    load_configured(cfg)
    data_seconds = time.perf_counter() - start

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        metrics = run(cfg, out_dir)
    total = time.perf_counter() - start
    history = pd.read_csv(out_dir / "history.csv")
    epoch_seconds = history["seconds"].tolist()
    return Result(
        epoch_seconds,
        metrics["test_error"],
        data_seconds,
        other_seconds=total - sum(epoch_seconds),
        extra={"diverged": metrics["diverged"]},
    )


def per_epoch(result: Result) -> float:
    return sum(result.epoch_seconds) / len(result.epoch_seconds)


def report(
    args, results: dict[str, list[Result]], n_train: int, n_test: int, pressure: str
) -> None:
    import torchvision

    version = importlib.metadata.version("biotorch")
    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, biotorch {version}, "
        f"CPU, {torch.get_num_threads()} threads; LeNet-5 (LeNetMNIST) uSF (sign(W) x Xavier "
        f"std), no BN; SGD lr {args.lr} momentum 0.9 weight decay {args.weight_decay}, constant; "
        f"batch {args.batch_size}; {n_train} train / {n_test} test Fashion-MNIST images; "
        f"{args.epochs} epoch(s) per run; biotorch num_workers {args.num_workers}; "
        f"seed {args.seed}; {args.repeats} interleaved repeat(s), medians"
    )
    seconds = {name: statistics.median(map(per_epoch, rs)) for name, rs in results.items()}
    labels = {
        "biotorch": "biotorch (Dataset/DataLoader, functions.train + test)",
        "asymbp": "asymbp (`asymbp.train.run`, as asymbp-train)",
    }
    print()
    print(
        f"| pipeline | s/epoch (median) | test error after {args.epochs} epoch(s) | "
        "ratio (biotorch s / pipeline s) |"
    )
    print("|---|---|---|---|")
    for name, rs in results.items():
        errors = [r.test_error for r in rs]
        spread = "" if len(rs) == 1 else f" ({min(errors):.2%}-{max(errors):.2%})"
        diverged = " diverged" if any(r.extra.get("diverged") for r in rs) else ""
        print(
            f"| {labels[name]} | {seconds[name]:.2f} | "
            f"{statistics.median(errors):.2%}{spread}{diverged} | "
            f"{seconds['biotorch'] / seconds[name]:.2f} |"
        )
    bio, asy = results["biotorch"], results["asymbp"]
    print()
    print(
        "Outside the timed epochs (medians): biotorch dataset + loaders "
        f"{statistics.median(r.data_seconds for r in bio):.2f} s; asymbp IDX load "
        f"{statistics.median(r.data_seconds for r in asy):.2f} s, whole run() minus its epochs "
        f"{statistics.median(r.other_seconds for r in asy):.2f} s; biotorch's test pass alone "
        f"{statistics.median(r.extra['test_seconds'] for r in bio):.2f} s of its epoch. "
        "Per repeat s/epoch: biotorch "
        + ", ".join(f"{per_epoch(r):.2f}" for r in bio)
        + "; asymbp "
        + ", ".join(f"{per_epoch(r):.2f}" for r in asy)
        + f". CPU pressure (PSI some avg60) before / after: {pressure}."
    )
    fastest = {name: min(map(per_epoch, rs)) for name, rs in results.items()}
    print(
        f"Fastest repeat (least disturbed by other jobs): biotorch {fastest['biotorch']:.2f} s, "
        f"asymbp {fastest['asymbp']:.2f} s per epoch, ratio "
        f"{fastest['biotorch'] / fastest['asymbp']:.2f}."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-subset", type=int, default=None, help="N training images")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--num-workers", type=int, default=0, help="biotorch's DataLoaders")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", type=Path, default=DEBIAN_FASHION_MNIST)
    args = parser.parse_args()
    if args.repeats < 1 or args.epochs < 1:
        parser.error("--repeats and --epochs must be >= 1")

    modules = import_biotorch()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="peer_biotorch_") as tmp:
        tmp = Path(tmp)
        bio_root = torchvision_layout(args.root, tmp / "torchvision")
        cfg = asymbp_config(args, str(tmp / "outputs"))
        data = load_configured(cfg)
        indices = subset_indices(data.train_labels, args.train_subset, cfg.val_seed)
        n_train = data.train_labels.numel() if indices is None else indices.numel()

        results: dict[str, list[Result]] = {"biotorch": [], "asymbp": []}
        before = cpu_pressure()
        for repeat in range(args.repeats):
            results["biotorch"].append(biotorch_repeat(modules, args, bio_root, indices))
            results["asymbp"].append(asymbp_repeat(cfg, args, tmp / f"asymbp_{repeat}"))
            print(
                f"repeat {repeat + 1}/{args.repeats}: biotorch "
                f"{per_epoch(results['biotorch'][-1]):.2f} s/epoch, asymbp "
                f"{per_epoch(results['asymbp'][-1]):.2f} s/epoch",
                file=sys.stderr,
            )
        pressure = f"{before} / {cpu_pressure()}"
        report(args, results, n_train, data.test_labels.numel(), pressure)


if __name__ == "__main__":
    main()

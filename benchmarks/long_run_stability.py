"""Long default runs: does training get worse after it has converged? The Batch Manhattan
variants side by side.

Conditions: the default config (digits, paper_cnn, uSF, BN+BM, SGD momentum 0.9, weight decay
5e-4, cosine schedule over the run) for `--epochs` (150 by default), one torch thread, CPU,
deterministic, with Batch Manhattan taking the sign of the raw mini-batch gradient (Xiao et al.
2018's BM-SGD) at bm_lr 5e-4 (asymbp's old default) and 10x smaller, the sign of the
momentum-smoothed update at 1e-3
(`norm.sign_of=update`), each also with the output layer left out of BM (`norm.scope=hidden`:
plain SGD at optimizer.lr, Xiao et al.'s default), and plain SGD with BN (no BM). The variant the
config uses by default is marked. For each it prints the lowest training loss and its epoch, the
last epoch's training loss and test accuracy, and how much the output layer's weight norm grew.

Why the raw sign drifts (benchmarks/README.md): every step moves every weight by bm_lr (up to
10x with momentum 0.9) whatever the size of its gradient; once the training loss is near zero the
gradient only says "grow the margins", which the output layer (no BN after it) does by growing its
weights, and weight decay (5e-4 * w added to a sign of size 1) cannot hold it back. `flag` marks a
run whose last training loss is over 100x its lowest and over 0.01.

    python benchmarks/long_run_stability.py [--epochs 150] [--seed 0]
"""

from __future__ import annotations

import argparse
import tempfile

import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from tabulate import tabulate

from asymbp import runs
from asymbp.build import make_model
from asymbp.config import CONFIG_DIR
from asymbp.data import Splits
from asymbp.train import run

VARIANTS = {
    "sign of update, bm_lr 1e-3": [
        "norm.sign_of=update", "norm.scope=all", "optimizer.bm_lr=0.001",
    ],
    "sign of update, output layer plain SGD": [
        "norm.sign_of=update", "norm.scope=hidden", "optimizer.bm_lr=0.001",
    ],
    "sign of gradient, bm_lr 5e-4": [
        "norm.sign_of=gradient", "norm.scope=all", "optimizer.bm_lr=0.0005",
    ],
    "sign of gradient, bm_lr 5e-5": [
        "norm.sign_of=gradient", "norm.scope=all", "optimizer.bm_lr=0.00005",
    ],
    "sign of gradient, output layer plain SGD": [
        "norm.sign_of=gradient", "norm.scope=hidden", "optimizer.bm_lr=0.0005",
    ],
    "norm=bn (plain SGD, no BM)": ["norm=bn"],
}  # fmt: skip


def output_layer_norm(state: dict) -> float:
    weights = [key for key, value in state.items() if key.endswith("weight") and value.dim() == 2]
    return float(state[weights[-1]].norm())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for label, overrides in VARIANTS.items():
            with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
                cfg = compose("train", overrides=[
                    f"epochs={args.epochs}", f"seed={args.seed}", "threads=1", "device=cpu",
                    "deterministic=true", "alignment=false", "progress=false",
                    f"output_root={out}", *overrides,
                ])  # fmt: skip
                default = compose("train")
            same = (cfg.norm, cfg.optimizer.bm_lr) == (default.norm, default.optimizer.bm_lr)
            metrics = run(cfg)
            run_dir = runs.run_directory(cfg)
            history = pd.read_csv(run_dir / runs.HISTORY)
            torch.manual_seed(cfg.seed)
            splits = Splits(cfg, torch.device("cpu"))
            initial = make_model(cfg, splits.input_shape, splits.num_classes).state_dict()
            final = torch.load(run_dir / runs.CHECKPOINT, weights_only=True)["model"]
            lowest = history["train_loss"].idxmin()
            last_loss = history["train_loss"].iloc[-1]
            low = history["train_loss"].iloc[lowest]
            growth = output_layer_norm(final) / output_layer_norm(initial)
            rows.append({
                "variant": label + (" (default)" if same else ""),
                "lowest train loss (epoch)": f"{low:.2g} ({history['epoch'].iloc[lowest]})",
                "last train loss": f"{last_loss:.3g}",
                "best test acc": f"{history['test_acc'].max():.4f}",
                "last test acc": f"{metrics['test_acc']:.4f}",
                "output-layer |W| growth": f"{growth:.1f}x",
                "flag": "GETS WORSE" if last_loss > max(100 * low, 0.01) else "",
            })  # fmt: skip
    print(f"digits, {args.epochs} epochs, seed {args.seed}, torch {torch.__version__}, 1 thread")
    print(tabulate(rows, headers="keys", tablefmt="github"))


if __name__ == "__main__":
    main()

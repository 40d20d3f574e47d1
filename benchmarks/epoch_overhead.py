"""Overhead of asymbp-train's loop: one epoch against a minimal hand-written PyTorch loop.

Conditions: CPU, float32, `--threads` torch threads, Fashion-MNIST-shaped synthetic data (1x28x28,
10 classes, `--train-size` samples, in memory), `paper_cnn` without BN, feedback `bp`, SGD with
momentum, batch 64. Both sides train the same architecture from the same initial weights over the
same tensors; the hand loop indexes a pre-normalized float tensor, the smallest loop one can write.

Two comparisons, interleaved within each repeat, medians over `--repeats`:
1. training epoch: asymbp's `engine.train_epoch` (what asymbp-train runs each epoch) vs the loop;
2. whole run of one epoch: `asymbp.train.run` (data set-up, validation and test evaluation,
   alignment metrics, checkpoint and files) vs the loop plus one test-set evaluation.

    python benchmarks/epoch_overhead.py [--repeats 5] [--train-size 12000] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from asymbp.build import make_model, make_optimizer
from asymbp.engine import train_epoch
from asymbp.models import build_model
from asymbp.train import CONFIG_DIR, Splits, run


def config(train_size: int, threads: int, output_root: str):
    overrides = [
        "dataset=synthetic", "dataset.size=28", "dataset.channels=1",
        f"dataset.train_size={train_size}", "dataset.test_size=2000", "model=paper_cnn",
        "feedback=bp", "norm=none", "optimizer.schedule=none", "epochs=1", "batch_size=64",
        f"threads={threads}", "progress=false", "force=true", f"output_root={output_root}",
    ]  # fmt: skip
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


def hand_loop_epoch(model, optimizer, x, y, batch_size, generator) -> None:
    model.train()
    order = torch.randperm(y.shape[0], generator=generator)
    for start in range(0, y.shape[0], batch_size):
        index = order[start : start + batch_size]
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[index]), y[index]).backward()
        optimizer.step()


@torch.no_grad()
def hand_evaluate(model, x, y, batch_size=1024) -> float:
    model.eval()
    correct = sum(
        (model(x[s : s + batch_size]).argmax(1) == y[s : s + batch_size]).sum().item()
        for s in range(0, y.shape[0], batch_size)
    )
    return correct / y.shape[0]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train-size", type=int, default=12000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = tempfile.mkdtemp(prefix="asymbp-bench-")
    cfg = config(args.train_size, args.threads, out)

    splits = Splits(cfg, torch.device("cpu"))
    train_x, train_y = splits.train
    test_x, test_y = splits.normalize(splits.test[0]), splits.test[1]
    pre_normalized = splits.normalize(train_x)

    torch.manual_seed(0)
    ours = make_model(cfg, splits.input_shape, splits.num_classes)
    ours_opt = make_optimizer(cfg, ours)
    torch.manual_seed(0)
    plain = build_model("paper_cnn", in_channels=1, image_size=28, num_classes=10, batch_norm=False)
    plain_opt = torch.optim.SGD(plain.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    gen_ours, gen_plain = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)

    variants = {
        "hand loop": lambda: hand_loop_epoch(
            plain, plain_opt, pre_normalized, train_y, 64, gen_plain
        ),
        "asymbp train_epoch": lambda: train_epoch(
            ours, ours_opt, train_x, train_y, splits.normalize, 64, gen_ours, 100.0
        ),
        "hand loop + test eval": lambda: (
            hand_loop_epoch(plain, plain_opt, pre_normalized, train_y, 64, gen_plain),
            hand_evaluate(plain, test_x, test_y),
        ),
        "asymbp-train run(), 1 epoch": lambda: run(cfg),
    }
    times = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            times[name].append(timed(fn))

    median = {name: statistics.median(t) for name, t in times.items()}
    print(
        f"torch {torch.__version__}, {args.threads} threads, {args.train_size} training samples "
        f"1x28x28, paper_cnn, bp, no BN, batch 64, {args.repeats} interleaved repeats"
    )
    print("| comparison | asymbp s/epoch | hand loop s/epoch | ratio |")
    print("|---|---|---|---|")
    for ours_name, plain_name in (
        ("asymbp train_epoch", "hand loop"),
        ("asymbp-train run(), 1 epoch", "hand loop + test eval"),
    ):
        a, b = median[ours_name], median[plain_name]
        print(f"| {ours_name} vs {plain_name} | {a:.2f} | {b:.2f} | {a / b:.3f} |")


if __name__ == "__main__":
    main()

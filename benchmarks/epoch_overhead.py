"""Overhead of asymbp-train's loop: one epoch against a minimal hand-written PyTorch loop.

Conditions: `--device` (cpu by default), float32, `--threads` torch threads, synthetic data of
Fashion-MNIST shape by default (`--channels 1 --size 28`, 10 classes, `--train-size` samples, in
memory on the device), `paper_cnn` without BN, SGD with momentum, batch 64. The hand loop trains
the same architecture with plain PyTorch (exact BP) from the same initial weights over the same
tensors, indexing a pre-normalized float tensor: the smallest loop one can write. asymbp trains
with each rule of `--feedback` (bp by default, so the ratio is pure loop overhead).

Two comparisons per rule, interleaved within each repeat, medians over `--repeats`:
1. training epoch: asymbp's `engine.train_epoch` (what asymbp-train runs each epoch) vs the loop;
2. whole run of one epoch: `asymbp.train.run` (data set-up, validation and test evaluation,
   alignment metrics, checkpoint and files) vs the loop plus one test-set evaluation.

    python benchmarks/epoch_overhead.py [--repeats 5] [--train-size 12000] [--threads 2]
    python benchmarks/epoch_overhead.py --device cuda --channels 3 --size 32 --train-size 50000 \
        --feedback bp usf        # the GPU check (benchmarks/gpu_check.sh)
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from asymbp.build import make_model, make_optimizer
from asymbp.config import CONFIG_DIR
from asymbp.data import Splits
from asymbp.engine import train_epoch
from asymbp.layers import update_feedback_after_steps
from asymbp.models import build_model
from asymbp.train import run

#: Rule options that keep a rule from diverging without BN (uSF at unit scale does: the paper's
#: claim 4), so that every timed epoch is a whole one.
RULE_OPTIONS = {"usf": ["feedback.scale=init_std"], "sc": ["feedback.concordance=0.5"]}


def config(args, feedback: str, output_root: str):
    overrides = [
        "dataset=synthetic", f"dataset.size={args.size}", f"dataset.channels={args.channels}",
        f"dataset.train_size={args.train_size}", "dataset.test_size=2000", "model=paper_cnn",
        f"feedback={feedback}", "norm=none", "optimizer.schedule=none", "epochs=1",
        "batch_size=64", f"threads={args.threads}", f"device={args.device}", "progress=false",
        "force=true", f"output_root={output_root}", *RULE_OPTIONS.get(feedback, []),
    ]  # fmt: skip
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


def hand_loop_epoch(model, optimizer, x, y, batch_size, generator) -> None:
    model.train()
    order = torch.randperm(y.shape[0], generator=generator).to(y.device)
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


def timed(name: str, fn) -> float:
    start = time.perf_counter()
    result = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    diverged = getattr(result, "diverged", None)
    if diverged is None and isinstance(result, dict):
        diverged = result.get("diverged")
    if diverged:  # train_epoch stops at a diverging loss: its time would cover part of an epoch
        raise SystemExit(f"epoch_overhead.py: error: {name} diverged; its time is not an epoch's")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train-size", type=int, default=12000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--feedback", nargs="+", default=["bp"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    out = tempfile.mkdtemp(prefix="asymbp-bench-")
    configs = {rule: config(args, rule, out) for rule in args.feedback}

    splits = Splits(configs[args.feedback[0]], device)
    train_x, train_y = splits.train
    test_x, test_y = splits.normalize(splits.test[0]), splits.test[1]
    pre_normalized = splits.normalize(train_x)

    torch.manual_seed(0)
    plain = build_model(
        "paper_cnn", in_channels=args.channels, image_size=args.size, num_classes=10,
        batch_norm=False,
    ).to(device)  # fmt: skip
    plain_opt = torch.optim.SGD(plain.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    gen_plain = torch.Generator().manual_seed(0)
    variants = {
        "hand loop": lambda: hand_loop_epoch(
            plain, plain_opt, pre_normalized, train_y, 64, gen_plain
        ),
        "hand loop + test eval": lambda: (
            hand_loop_epoch(plain, plain_opt, pre_normalized, train_y, 64, gen_plain),
            hand_evaluate(plain, test_x, test_y),
        ),
    }
    for rule, cfg in configs.items():
        torch.manual_seed(0)
        model = make_model(cfg, splits.input_shape, splits.num_classes).to(device)
        optimizer, generator = make_optimizer(cfg, model), torch.Generator().manual_seed(0)
        update_feedback_after_steps(model, optimizer)  # as run() does (weight mirror learns V)
        variants[f"asymbp train_epoch ({rule})"] = functools.partial(
            train_epoch, model, optimizer, train_x, train_y, splits.normalize, 64, generator, 100.0
        )
        variants[f"asymbp-train run() ({rule})"] = functools.partial(run, cfg)

    for name, fn in variants.items():  # warm-up: kernels, caches, allocator
        timed(name, fn)
    times = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            times[name].append(timed(name, fn))

    median = {name: statistics.median(t) for name, t in times.items()}
    print(
        f"torch {torch.__version__}, {args.device}, {args.threads} threads, {args.train_size} "
        f"training samples {args.channels}x{args.size}x{args.size}, paper_cnn, no BN, batch 64, "
        f"{args.repeats} interleaved repeats; rule options {RULE_OPTIONS}"
    )
    print("| comparison | asymbp s/epoch | hand loop s/epoch | ratio |")
    print("|---|---|---|---|")
    for rule in configs:
        for ours_name, plain_name in (
            (f"asymbp train_epoch ({rule})", "hand loop"),
            (f"asymbp-train run() ({rule})", "hand loop + test eval"),
        ):
            a, b = median[ours_name], median[plain_name]
            print(f"| {ours_name} vs {plain_name} | {a:.3f} | {b:.3f} | {a / b:.3f} |")


if __name__ == "__main__":
    main()

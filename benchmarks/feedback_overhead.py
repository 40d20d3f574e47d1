"""Cost of asymmetric feedback: one full training step of a conv net or a ViT, plain PyTorch vs
each rule.

Conditions: CPU, float32, torch's default thread count, batch 128 of 3x32x32 (CIFAR-shaped),
asymbp's `paper_cnn` at 32x32 (conv5x5-32, max-pool, conv5x5-64, avg-pool, conv5x5-64, avg-pool,
fc-128, fc-10, ReLU) or, with `--model vit`, asymbp's `vit` at its defaults (4x4 patches: 64
tokens and a class token, width 64, 4 pre-norm blocks of 4-head attention and an MLP of 128;
dfa, undefined with attention, is left out), SGD with momentum. A step is forward + backward +
optimizer step; for kp the optimizer also steps V, for wm the step includes its mirror update
(default options: one mirror step of 128 noise samples per training step), which is also timed
alone. Variants are interleaved
within every repeat so that drifts of the machine hit all of them alike; the figure is the median
over repeats, each repeat timing `--steps` consecutive steps. Targets: kp <= 1.10x and
dfa <= 1.05x plain PyTorch (ViT: every rule <= 1.10x); wm's mirror cost is stated as a fraction of
a plain training step.

    python benchmarks/feedback_overhead.py [--repeats 15] [--steps 5] [--batch 128] [--model vit]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import asymbp
from asymbp.feedback import RULES
from asymbp.layers import update_feedback, update_feedback_after_steps
from asymbp.models import build_model

TARGETS = {"paper_cnn": {"kp": 1.10, "dfa": 1.05}, "vit": dict.fromkeys(RULES, 1.10)}
#: Rules a model cannot take (DFA refuses attention).
UNDEFINED = {"paper_cnn": set(), "vit": {"dfa"}}


def make_variant(model_name: str, rule: str | None):
    torch.manual_seed(0)
    model = build_model(model_name, in_channels=3, image_size=32, num_classes=10, batch_norm=False)
    if rule is not None:
        options = {"concordance": 0.5} if rule == "sc" else {}
        asymbp.convert(model, rule, seed=0, **options)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    update_feedback_after_steps(model, optimizer)  # wm: mirror after every step
    return model, optimizer


def timed_mirror(model, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        update_feedback(model)
    return (time.perf_counter() - start) / steps


def timed_steps(model, optimizer, x, y, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--model", choices=sorted(TARGETS), default="paper_cnn")
    args = parser.parse_args()

    x, y = torch.randn(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,))
    rules = [r for r in RULES if r not in UNDEFINED[args.model]]
    names = ["pytorch", *rules]
    variants = {n: make_variant(args.model, None if n == "pytorch" else n) for n in names}
    times: dict[str, list[float]] = {name: [] for name in names}
    for name in names:  # warm-up
        timed_steps(*variants[name], x, y, steps=2)
    mirror_times = []
    for _ in range(args.repeats):
        for name in names:
            times[name].append(timed_steps(*variants[name], x, y, args.steps))
        mirror_times.append(timed_mirror(variants["wm"][0], args.steps))

    baseline = statistics.median(times["pytorch"])
    print(
        f"torch {torch.__version__}, {args.model}, {torch.get_num_threads()} threads, batch "
        f"{args.batch}, {args.repeats} repeats x {args.steps} steps"
    )
    print("| variant | median ms/step | ratio to plain PyTorch |")
    print("|---|---|---|")
    for name in names:
        median = statistics.median(times[name])
        label = "plain PyTorch" if name == "pytorch" else f"asymbp {name}"
        targets = TARGETS[args.model]
        target = f" (target <= {targets[name]:.2f})" if name in targets else ""
        print(f"| {label} | {median * 1e3:.1f} | {median / baseline:.3f}{target} |")
    mirror = statistics.median(mirror_times)
    print(
        f"\nwm mirror update alone: {mirror * 1e3:.1f} ms = {mirror / baseline:.3f} of a plain "
        "training step (included in the wm row)"
    )


if __name__ == "__main__":
    main()

"""Adversarial robustness of finished runs: FGSM, PGD and APGD-CE (L-infinity, torchattacks) at a
list of epsilons, by three attackers that differ in the gradient they follow:

- `exact`: the true gradient of the function the network computes (`exact_backprop`): the
  white-box attack;
- `rule`: the gradient through the run's own feedback rule (its backward pass with V, or DFA's
  e B), which is what attacking an asymbp model naively computes; where it finds the network
  more robust than `exact` does, that robustness is gradient masking, not robustness;
- `transfer`: examples made (with exact gradients) on another run, then shown to this one: a
  black-box attack. `attack.transfer_from` names that run as init_from does, by the values
  that turn this run's config into its: null (the default) is `{feedback: bp}`, the backprop
  run of the same condition and seed; `{feedback: bp, optimizer.lr: 0.03}` where each rule
  trained at its own rate. A run that is its own source (bp) attacks itself.

Epsilons are in pixel units of [0, 1] images: the perturbation is made and clipped in [0, 1],
before the run's normalization, which sits inside the attacked function (`PixelModel`).
Epsilon 0 runs the attack too and gives the clean accuracy.

Results go into the run directory, `robustness/<attack>-<key>.json`, one file per attack
setting (`settings_key`: everything that changes the numbers, except the epsilons and
attackers, which are its rows), written atomically under the run's lock; what a file already
holds is not computed again. `asymbp-eval` (asymbp.evaluate) attacks finished runs; `attack=...`
in asymbp-train does it at the end of training.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from asymbp import runs
from asymbp.config import ConfigError, out_of_range
from asymbp.layers import asymmetric_layers, exact_backprop
from asymbp.registry import Fraction, OpenFraction, Positive, PositiveInt, Seed, describe, fits

#: The attackers, in the order of every output.
ATTACKERS = ("exact", "rule", "transfer")
#: The folder of a run directory that holds its attack results.
RESULTS_DIR = "robustness"
INSTALL = "pip install 'asymbp[robustness]'"
#: Keys that do not change the numbers, hence not part of a result file's key.
ROW_KEYS = ("epsilons", "attackers")


def _torchattacks():
    try:
        return importlib.import_module("torchattacks")
    except ImportError as error:
        raise ConfigError(f"attacks need torchattacks ({error}): {INSTALL}") from None


@dataclass(frozen=True)
class Option:
    """One key of an attack: its check, what the error says it must be and, where the check is
    a type's (registry.fits), that type."""

    check: Callable[[object], bool]
    allowed: str
    annotation: object = None

    @classmethod
    def declared(cls, annotation, note: str = "") -> Option:
        """The option whose values are those of `annotation` (registry.fits, registry.Range)."""
        return cls(lambda v: fits(v, annotation), describe(annotation) + note, annotation)


def _distinct(annotation, example: str) -> Option:
    """A non-empty list of distinct values of `annotation`."""
    return Option(
        lambda v: isinstance(v, list | tuple) and len(v) > 0 and len(set(v)) == len(v)
        and fits(v, list[annotation]),
        f"a list of distinct values, each {describe(annotation)}, e.g. {example}",
        list[annotation],
    )  # fmt: skip


STEPS = Option.declared(PositiveInt)
COMMON = {
    "epsilons": _distinct(Fraction, "[0, 0.01, 0.03, 0.1] (pixel units)"),
    "attackers": _distinct(Literal[ATTACKERS], "[exact, rule, transfer]"),
    "subset": Option.declared(PositiveInt | None),
    "seed": Option.declared(Seed),
    "transfer_from": Option(
        lambda v: v is None or (isinstance(v, dict) and len(v) > 0),
        "null ({feedback: bp}) or a mapping of config values, e.g. {feedback: bp, optimizer.lr: "
        "0.03}",
    ),
    "batch_size": Option.declared(PositiveInt),
}


@dataclass(frozen=True)
class Attack:
    """How to build one torchattacks attack on `model` at `eps` from the config's options."""

    build: Callable[[object, nn.Module, float, Mapping], object]
    options: dict[str, Option] = field(default_factory=dict)


def _fgsm(ta, model, eps, _):
    return ta.FGSM(model, eps=eps)


def _pgd(ta, model, eps, cfg):
    alpha = cfg["step_size"] * eps / cfg["steps"]
    return ta.PGD(model, eps=eps, alpha=alpha, steps=cfg["steps"], random_start=cfg["random_start"])


def _apgd(ta, model, eps, cfg):
    return ta.APGD(
        model, norm="Linf", eps=eps, steps=cfg["steps"], n_restarts=cfg["restarts"],
        seed=cfg["seed"], loss="ce", rho=cfg["rho"],
    )  # fmt: skip


ATTACKS = {
    "fgsm": Attack(_fgsm),
    "pgd": Attack(
        _pgd,
        {
            "steps": STEPS,
            "step_size": Option.declared(Positive, " (x eps / steps)"),
            "random_start": Option.declared(bool),
        },
    ),
    "apgd": Attack(
        _apgd,
        {
            "steps": STEPS,
            "restarts": Option.declared(PositiveInt),
            "rho": Option.declared(OpenFraction),
        },
    ),
}
#: The transfer attacker's source when attack.transfer_from is null: the backprop run.
DEFAULT_SOURCE = {"feedback": "bp"}
#: `attack=none`: no attack (asymbp-train's default).
NONE = "none"


def enabled(attack: DictConfig | None) -> bool:
    return attack is not None and attack.get("name") != NONE


def check(attack: DictConfig) -> None:
    """ConfigError for the first key of `attack` that is unknown or out of range, and when
    torchattacks is missing; nothing for attack=none."""
    if not enabled(attack):
        return
    name = attack.get("name")
    if name not in ATTACKS:
        raise ConfigError(f"attack={name} is not an attack: choose {', '.join(ATTACKS)} or none")
    options = {**COMMON, **ATTACKS[name].options}
    values = OmegaConf.to_container(attack, resolve=True)
    for key in values:
        if key != "name" and key not in options:
            raise ConfigError(
                f"attack.{key} is not a key of attack={name}: its keys are {', '.join(options)}"
            )
    for key, option in options.items():
        if key not in values:
            raise ConfigError(f"attack.{key} is missing: attack={name} needs it")
        if not option.check(values[key]):
            raise out_of_range(f"attack.{key}", values[key], option.allowed)
    _torchattacks()


def settings(attack: DictConfig) -> dict:
    """The settings that a result depends on (all keys but the epsilons and attackers)."""
    values = OmegaConf.to_container(attack, resolve=True)
    return {k: v for k, v in sorted(values.items()) if k not in ROW_KEYS}


def settings_key(attack: DictConfig) -> str:
    text = json.dumps(settings(attack), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def results_path(run_dir: Path, attack: DictConfig) -> Path:
    return run_dir / RESULTS_DIR / f"{attack.name}-{settings_key(attack)}.json"


class PixelModel(nn.Module):
    """The attacked function: [0, 1] pixels -> the run's normalization -> the model's logits."""

    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def pixels(images: torch.Tensor) -> torch.Tensor:
    """Stored uint8 images as float pixels in [0, 1], exactly as the run's Normalizer scales
    them; ConfigError for data that is not images (features have no pixel units)."""
    if images.dtype != torch.uint8:
        raise ConfigError(
            "attacks need an image dataset stored as 8-bit pixels (epsilons are in pixel units "
            f"of [0, 1]); this one holds {images.dtype} features: leave attack=none"
        )
    return images.float().div_(255.0)


def attacked_subset(labels: torch.Tensor, size: int | None, seed: int) -> torch.Tensor:
    """Indices of the test samples attacked: all, or `size` of them drawn with `seed` (the same
    for every run of a dataset, so that runs are compared on the same images), in order."""
    n = labels.shape[0]
    if size is None or size >= n:
        return torch.arange(n)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=generator)[:size].sort().values


def adversarial(attacker_model: PixelModel, attack: DictConfig, eps: float, x, y) -> torch.Tensor:
    """Adversarial examples for (x, y) made on `attacker_model` as it back-propagates now."""
    ta = _torchattacks()
    spec = ATTACKS[attack.name]
    made = spec.build(ta, attacker_model, float(eps), OmegaConf.to_container(attack, resolve=True))
    return made(x, y)


def input_gradient(model: PixelModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d(mean cross-entropy)/dx as the model back-propagates now (tests compare attackers)."""
    x = x.clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(x), y)
    return torch.autograd.grad(loss, x)[0]


@dataclass
class Target:
    """A run to attack: its directory, its model as the attacked function and its test data."""

    run_dir: Path
    model: PixelModel
    images: torch.Tensor  # [0, 1] pixels of the attacked test samples
    labels: torch.Tensor
    source: Target | None = None  # the transfer attacker's run (None: the run itself)


def accuracy_under_attack(
    target: Target, attack: DictConfig, attacker: str, eps: float, cache: dict | None = None
) -> tuple[int, int]:
    """(correct, total) of the target on adversarial versions of its test samples, made by
    `attacker`; every call starts from attack.seed, so a result does not depend on what else
    was computed before it. `cache` keeps transfer examples per (source, eps)."""
    model = target.model
    model.eval()
    correct = 0
    n = target.labels.shape[0]
    for start in range(0, n, attack.batch_size):
        x = target.images[start : start + attack.batch_size]
        y = target.labels[start : start + attack.batch_size]
        torch.manual_seed(attack.seed + start)
        if attacker == "transfer":
            source = target.source or target
            key = (str(source.run_dir), float(eps), start)
            if cache is None or key not in cache:
                source.model.eval()
                with exact_backprop(source.model):
                    made = adversarial(source.model, attack, eps, x, y)
                if cache is not None:
                    cache[key] = made
            adv = cache[key] if cache is not None else made
        elif attacker == "exact":
            with exact_backprop(model):
                adv = adversarial(model, attack, eps, x, y)
        else:
            adv = adversarial(model, attack, eps, x, y)
        with torch.no_grad():
            correct += int((model(adv).argmax(1) == y).sum())
    return correct, n


def _epsilon_text(eps: float) -> str:
    return repr(float(eps))


def read_results(path: Path) -> dict:
    """A result file's content, or an empty record when there is none yet."""
    if not path.is_file():
        return {"results": []}
    return json.loads(path.read_text(encoding="utf-8"))


def missing_rows(path: Path, attack: DictConfig) -> list[tuple[str, float]]:
    """The (attacker, epsilon) pairs of `attack` that its result file does not hold yet."""
    have = {(r["attacker"], _epsilon_text(r["epsilon"])) for r in read_results(path)["results"]}
    return [
        (attacker, float(eps))
        for attacker in attack.attackers
        for eps in attack.epsilons
        if (attacker, _epsilon_text(eps)) not in have
    ]


def _same_as_exact(target: Target, attacker: str) -> bool:
    """Whether `attacker` computes what `exact` does on this target: `rule` on a model whose
    every layer back-propagates exactly (bp), `transfer` on a run that is its own source."""
    if attacker == "transfer":
        return target.source is None
    if attacker == "rule":
        return all(layer.feedback_rule.is_exact for _, layer in asymmetric_layers(target.model))
    return False


def evaluate(
    target: Target, attack: DictConfig, cache: dict | None = None, report=print
) -> list[dict]:
    """Compute the rows of `attack` that the target's result file lacks and write them into it
    (atomically: the file holds the old rows or all of them). The caller holds the run's lock.
    Returns every row of that file."""
    path = results_path(target.run_dir, attack)
    record = read_results(path)
    todo = missing_rows(path, attack)
    exact = {}  # eps -> (correct, n) of the exact attacker, for the attackers identical to it
    for attacker, eps in todo:
        start = time.perf_counter()
        if eps in exact and _same_as_exact(target, attacker):
            correct, n = exact[eps]  # the very computation, from the same seed: not repeated
        else:
            correct, n = accuracy_under_attack(target, attack, attacker, eps, cache)
        if attacker == "exact":
            exact[eps] = (correct, n)
        source = target.source.run_dir if (attacker == "transfer" and target.source) else None
        row = {
            "attacker": attacker,
            "epsilon": eps,
            "accuracy": correct / n,
            "correct": correct,
            "n": n,
            "seconds": round(time.perf_counter() - start, 3),
            "source": None if source is None else source.name,
        }
        record["results"].append(row)
        report(
            f"{target.run_dir.name}: {attack.name} {attacker} eps={eps:g} "
            f"accuracy={row['accuracy']:.4f} ({row['seconds']:.1f}s)"
        )
    if todo:
        record.update(attack=str(attack.name), settings=settings(attack))
        order = {a: i for i, a in enumerate(ATTACKERS)}
        record["results"].sort(key=lambda r: (order[r["attacker"]], r["epsilon"]))
        path.parent.mkdir(exist_ok=True)
        runs.write_json(path, record)
    return record["results"]

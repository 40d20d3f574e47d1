"""A generated sweep whose numbers are known: the docs' example report and the tests' fixture.

`write_sweep(root)` writes run directories as asymbp-train does (config.yaml: the resolved config
composed from conf/train.yaml by Hydra; history.csv, metrics.json, DONE) for every dataset x
feedback rule x stabilization x seed below. Test accuracy follows a formula except for the
conditions in SPECIAL, which cover every case the report handles: diverged, incomplete and broken
runs, a single seed, a condition never run, and a config that cannot be read. The numbers are
made up: not experimental results.
"""

from __future__ import annotations

import copy
import functools
import json
import math
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from asymbp import runs as files
from asymbp.config import CONFIG_DIR, GROUPS

DATASETS = ("digits", "mnist")
RULES = (
    ("bp", None),
    ("usf", None),
    ("brsf", None),
    ("frsf", None),
    ("rndf", None),
    ("sc", 0.25),
    ("sc", 0.5),
    ("sc", 0.75),
)
NORMS = ("none", "bn", "bm", "bn_bm")
SEEDS = (0, 1, 2)
EPOCHS = 5
LAYERS = ("features.0", "features.3", "classifier.1")
BASE_ACCURACY = {"digits": 0.96, "mnist": 0.985}
RULE_PENALTY = {"bp": 0.0, "usf": 0.005, "brsf": 0.01, "frsf": 0.008, "rndf": 0.06}
SC_PENALTY = 0.08  # times the fraction of discordant signs
NORM_PENALTY = {"none": 0.03, "bn": 0.01, "bm": 0.015, "bn_bm": 0.0}

DIVERGED, INCOMPLETE, BROKEN, ABSENT = "diverged", "incomplete", "broken", "absent"
# (dataset, rule, concordance, norm) -> {seed: final test accuracy or what happens to the run}
SPECIAL = {
    ("digits", "bp", None, "none"): {0: 0.90, 1: 0.92, 2: 0.94},
    ("mnist", "rndf", None, "none"): {0: DIVERGED, 1: 0.80, 2: 0.85},
    ("digits", "rndf", None, "none"): {0: DIVERGED, 1: DIVERGED, 2: DIVERGED},
    ("digits", "usf", None, "bn"): {0: 0.96, 1: 0.97, 2: INCOMPLETE},
    ("mnist", "frsf", None, "bm"): {0: 0.95, 1: BROKEN, 2: 0.97},
    ("mnist", "sc", 0.75, "bn_bm"): {0: 0.87, 1: ABSENT, 2: ABSENT},
    **{("mnist", "sc", 0.25, norm): dict.fromkeys(SEEDS, ABSENT) for norm in NORMS},
}
#: Where the broken config of the sweep lies, relative to the sweep folder.
HALF_WRITTEN = "half_written"


def run_config(
    dataset: str, rule: str, concordance: float | None, norm: str, seed: int
) -> DictConfig:
    """The config asymbp-train would run for these choices: conf/train.yaml composed by Hydra,
    with each group's node as Hydra composes it for that option (composed once per option)."""
    data = copy.deepcopy(_composed(f"epochs={EPOCHS}", "exp_name=fixture", "deterministic=true"))
    for group, option in (("dataset", dataset), ("feedback", rule), ("norm", norm)):
        data[group] = copy.deepcopy(_composed(f"{group}={option}")[group])
    if concordance is not None:
        data["feedback"]["concordance"] = concordance
    data["seed"] = seed
    # device and threads differ between seeds but are not part of a condition: they must pool.
    data["device"], data["threads"] = ("cuda" if seed % 2 else "cpu"), 1 + seed
    return OmegaConf.create(data)


@functools.cache
def _composed(*overrides: str) -> dict:
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return OmegaConf.to_container(compose("train", overrides=list(overrides)))


def angles(rule: str, concordance: float | None, epoch: int) -> tuple[float, float, float]:
    """Plausible (angle V-W, sign concordance, error angle at layer 0) for the fixture."""
    if rule == "sc":
        start = math.degrees(math.acos(2 * concordance - 1)) * 0.9
        return start, concordance, start * 0.8
    start, concordant = {
        "bp": (0, 1.0),
        "usf": (35, 1.0),
        "brsf": (50, 1.0),
        "frsf": (45, 1.0),
        "rndf": (90 - 3 * epoch, 0.5),
    }[rule]
    return start, concordant, start * 0.7


def history_rows(final: float, rule: str, concordance: float | None, epochs: int) -> list[dict]:
    """`epochs` rows of history.csv whose last test accuracy is `final`, with the best
    validation accuracy one epoch before the last."""
    rows = []
    for epoch in range(1, epochs + 1):
        test = final - 0.01 * (epochs - epoch) ** 2
        angle, concordant, error_angle = angles(rule, concordance, epoch)
        row = {
            "epoch": epoch,
            "train_loss": 2.0 / epoch,
            "train_acc": test + 0.5 * (1 - test),
            "val_acc": 0.999 * test + 0.011 * (epoch == epochs - 1),  # in [0, 1], best at -1
            "test_acc": test,
            "lr": 0.01 * math.cos(math.pi * (epoch - 1) / (2 * EPOCHS)),
            "seconds": 1.5,
        }
        for depth, layer in enumerate(LAYERS):
            row[f"angle_VW/{layer}"] = angle
            row[f"concordance/{layer}"] = concordant
            row[f"angle_error/{layer}"] = min(90.0, error_angle * (1 + 0.3 * depth))
        rows.append(row)
    return rows


def metrics(config: DictConfig, rows: list[dict], diverged: bool) -> dict:
    """metrics.json for a run whose history is `rows` (the last one diverged, if `diverged`)."""
    return {
        **files.result_metrics(rows, diverged),
        "wall_seconds": 1.5 * len(rows),
        "device": "cpu",
        "torch_version": "2.4.0",
        "seed": config.seed,
        **{group: config[group].name for group in GROUPS},
    }


def write_run(path: Path, config: DictConfig, outcome: float | str) -> None:
    """One run directory as asymbp.train writes it; `outcome` is the final test accuracy or
    DIVERGED / INCOMPLETE / BROKEN (DONE written, metrics.json garbled)."""
    path.mkdir(parents=True)
    (path / files.CONFIG).write_text(OmegaConf.to_yaml(config, resolve=True))
    rule, concordance = config.feedback.name, config.feedback.get("concordance")
    final = 0.1 if outcome == DIVERGED else 0.9 if isinstance(outcome, str) else outcome
    epochs = {DIVERGED: 2, INCOMPLETE: 3}.get(outcome, config.epochs)
    rows = history_rows(final, rule, concordance, epochs)
    if outcome == DIVERGED:
        rows[-1]["train_loss"] = math.nan
    pd.DataFrame(rows).to_csv(path / files.HISTORY, index=False)
    if outcome == INCOMPLETE:
        return
    record = metrics(config, rows, outcome == DIVERGED)
    record = {key: None if value != value else value for key, value in record.items()}  # NaN
    text = "{not json" if outcome == BROKEN else json.dumps(record, indent=2, sort_keys=True)
    (path / files.METRICS).write_text(text)
    (path / files.DONE).write_text("")


def formula_accuracy(dataset: str, rule: str, concordance: float | None, norm: str, seed: int):
    rule_penalty = SC_PENALTY * (1 - concordance) if rule == "sc" else RULE_PENALTY[rule]
    penalty = rule_penalty + NORM_PENALTY[norm]
    return round(BASE_ACCURACY[dataset] - penalty + 0.01 * (seed - 1), 6)


def write_sweep(root: Path) -> Path:
    """The sweep under root/fixture (dataset/rule/norm/seed folders), plus a broken config."""
    sweep = root / "fixture"
    for dataset, (rule, concordance), norm, seed in grid():
        outcome = SPECIAL.get((dataset, rule, concordance, norm), {}).get(seed)
        if outcome == ABSENT:
            continue
        if outcome is None:
            outcome = formula_accuracy(dataset, rule, concordance, norm, seed)
        name = rule if concordance is None else f"{rule}_p{concordance}"
        path = sweep / dataset / name / norm / f"seed{seed}"
        write_run(path, run_config(dataset, rule, concordance, norm, seed), outcome)
        (path / ".hydra").mkdir()  # a hidden folder, as Hydra's own output would be: skipped
        (path / ".hydra" / files.CONFIG).write_text("seed: -1\n")
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    broken = sweep / HALF_WRITTEN
    broken.mkdir()
    (broken / files.CONFIG).write_text("seed: [0, 1\nepochs: 5\n")
    return sweep


def grid():
    """(dataset, (rule, concordance), norm, seed) for every run the sweep plans."""
    for dataset in DATASETS:
        for rule in RULES:
            for norm in NORMS:
                for seed in SEEDS:
                    yield dataset, rule, norm, seed

"""Every numeric key of every config group refuses what is not a number in its range (issue 21,
case 8): YAML's true (a Python int), a string, -1, NaN and a value just past the range each give
one ConfigError line naming the key, before anything is written.

The keys come from the shipped YAML files (each numeric value, and each list of numbers), and a
key the YAML holds as null is taken from its component's declaration; a numeric key that nothing
declares fails the test, so a new option cannot skip the checks."""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Annotated, Literal

import pytest
from conftest import CONFIG_DIR, run_cli
from omegaconf import OmegaConf

from asymbp import jobs, robustness
from asymbp.config import ConfigError
from asymbp.data import DATASETS
from asymbp.data.base import Expect
from asymbp.feedback import RULES
from asymbp.models import CONTRACT, MODELS
from asymbp.optim import OPTIMIZERS, OptimizerKeys
from asymbp.registry import Range, declarations
from asymbp.train import check_search_numbers, run

#: The groups whose options are checked here, with every shipped option (not the shared `_` files).
GROUPS = ("dataset", "model", "feedback", "norm", "optimizer", "attack", "logger")
OPTIONS = [
    (group, path.stem)
    for group in GROUPS
    for path in sorted((CONFIG_DIR / group).glob("*.yaml"))
    if not path.stem.startswith("_")
]
BAD = ("true", "x", "-1", "nan", "range")


def _declared(group: str, node) -> dict:
    """key -> annotation for a group option, from the code that reads the option."""
    name = node.name
    if group == "feedback":
        return declarations(RULES[name])
    if group == "model":
        return {k: v for k, v in declarations(MODELS[name]).items() if k not in CONTRACT}
    if group == "dataset":
        found = dict(declarations(DATASETS[name]))
        hints = typing.get_type_hints(Expect, include_extras=True)
        found |= {f"expect.{f.name}": hints[f.name] for f in dataclasses.fields(Expect)}
        return found
    if group == "optimizer":
        return declarations(OPTIMIZERS[name]) | declarations(OptimizerKeys)
    if group == "attack" and name != "none":
        options = {**robustness.COMMON, **robustness.ATTACKS[name].options}
        return {k: o.annotation for k, o in options.items() if o.annotation is not None}
    return {}


def _numbers(annotation) -> list:
    """The numeric alternatives of an annotation (Annotated ints/floats, Literal ints), looking
    inside lists and tuples."""
    found = []
    for member in typing.get_args(annotation) if _is_union(annotation) else (annotation,):
        origin, args = typing.get_origin(member), typing.get_args(member)
        number = origin is Annotated and args[0] in (int, float)
        if number or (origin is Literal and all(type(a) is int for a in args)):
            found.append(member)
        elif origin in (list, tuple):
            found += [n for a in args if a is not Ellipsis for n in _numbers(a)]
        elif member in (int, float):
            found.append(member)
    return found


def _is_union(annotation) -> bool:
    return typing.get_origin(annotation) in (typing.Union, type(int | None))


def _outside(annotation):
    """A number just past what `annotation` allows (past the upper bound where there is one)."""
    if typing.get_origin(annotation) is Literal:
        return max(typing.get_args(annotation)) + 1
    base, *metadata = typing.get_args(annotation)
    (limits,) = [m for m in metadata if isinstance(m, Range)]
    step = 1 if base is int else 0.001
    if limits.lt is not None:
        return limits.lt
    if limits.le is not None:
        return limits.le + step
    return limits.gt if limits.gt is not None else limits.ge - step


def _numeric_leaves(node, prefix: str = "") -> dict:
    """dotted key -> value for each number, or list holding a number, in a YAML node."""
    found = {}
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            found |= _numeric_leaves(value, f"{dotted}.")
        elif _is_number(value) or (isinstance(value, list) and any(map(_is_number, value))):
            found[dotted] = value
    return found


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _bad_value(bad: str, annotation, current):
    value = {"true": True, "x": "x", "-1": -1, "nan": math.nan}.get(bad)
    if bad == "range":
        value = _outside(_numbers(annotation)[0])
    if isinstance(current, list):  # a list of numbers: the first one is bad
        return [value, *current[1:]]
    return value


@pytest.mark.parametrize(("group", "option"), OPTIONS)
def test_every_numeric_key_refuses_bad_values_in_one_line_before_anything_is_written(
    make_config, tmp_path, group, option
):
    cfg = make_config(f"{group}={option}")
    node = OmegaConf.to_container(cfg[group], resolve=True)
    declared = _declared(group, cfg[group])
    numeric = {k: a for k, a in declared.items() if _numbers(a)}
    leaves = _numeric_leaves(node)
    undeclared = set(leaves) - set(numeric)
    assert not undeclared, f"numeric keys that nothing declares: {undeclared}"
    assert not _numbers(declared.get("name")), "a group's name is not a number"
    failures = []
    for key, annotation in numeric.items():
        current = OmegaConf.select(cfg, f"{group}.{key}", default=None)
        if isinstance(current, type(cfg[group])) or key.split(".")[0] not in node:
            continue  # a nested block itself, or a parameter this YAML does not set
        current = OmegaConf.to_container(current) if OmegaConf.is_list(current) else current
        for bad in BAD:
            case = cfg.copy()
            value = _bad_value(bad, annotation, current)
            OmegaConf.update(case, f"{group}.{key}", value, merge=False)
            try:
                run(case)
                failures.append(f"{group}.{key}={value!r}: accepted")
            except ConfigError as error:
                message = str(error)
                if not message.startswith(f"{group}.{key}=") or "\n" in message:
                    failures.append(f"{group}.{key}={value!r}: {message!r}")
    assert not failures, "\n".join(failures)
    assert not (tmp_path / "outputs").exists()


def test_the_options_cover_every_group_with_numeric_keys():
    with_numbers = {group for group, _ in OPTIONS}
    assert {"dataset", "model", "feedback", "optimizer", "attack"} <= with_numbers
    assert ("feedback", "wm") in OPTIONS and ("dataset", "synthetic") in OPTIONS



#: A value past each search number's range (jobs.SEARCH_KEYS).
SEARCH_PAST = {"n_trials": 0, "n_jobs": 0, "max_failures": 0, "sampler.seed": 2**63}


def test_the_search_numbers_are_declared():
    assert set(SEARCH_PAST) == set(jobs.SEARCH_KEYS)
    search = OmegaConf.load(CONFIG_DIR / "hparams_search" / "_search.yaml").hydra.sweeper
    for key in SEARCH_PAST:
        assert OmegaConf.select(search, key) is not None or key == "max_failures", key


@pytest.mark.parametrize("key", sorted(SEARCH_PAST))
def test_a_bad_search_number_on_the_command_line_is_one_line_exit_2(capsys, key):
    for bad in ("true", "x", "-1", "nan", str(SEARCH_PAST[key])):
        with pytest.raises(SystemExit) as exit_:
            check_search_numbers(["hparams_search=usf", f"hydra.sweeper.{key}={bad}"])
        err = capsys.readouterr().err
        assert exit_.value.code == 2
        assert err.startswith(f"asymbp-train: error: hydra.sweeper.{key}=") and err.count("\n") == 1
    check_search_numbers(["hparams_search=usf", f"hydra.sweeper.{key}=3"])  # a good value passes


def test_a_bad_search_number_exits_before_hydra_writes_anything(tmp_path):
    result = run_cli(
        "-m", "hparams_search=usf", "hydra.sweeper.n_trials=0", f"output_root={tmp_path}"
    )
    assert result.returncode == 2
    assert result.stderr == (
        "asymbp-train: error: hydra.sweeper.n_trials=0 is out of range: an integer >= 1\n"
    )
    assert not any(tmp_path.iterdir())


#: The true/false keys: train.yaml's, the norm's and the feedback's conversion switch.
SWITCHES = (
    "deterministic", "force", "alignment", "dry_run", "sweep_report", "norm.batch_norm",
    "norm.batch_manhattan", "feedback.last_layer_bp",
)  # fmt: skip


def test_every_switch_is_listed():
    train = OmegaConf.load(CONFIG_DIR / "train.yaml")
    norm = OmegaConf.load(CONFIG_DIR / "norm" / "bn_bm.yaml")
    found = {k for k, v in train.items() if isinstance(v, bool)}
    found |= {f"norm.{k}" for k, v in norm.items() if isinstance(v, bool)}
    assert found | {"feedback.last_layer_bp"} == set(SWITCHES)


@pytest.mark.parametrize("key", SWITCHES)
def test_a_switch_refuses_what_is_not_true_or_false(make_config, tmp_path, key):
    """A string or a number is not a switch: `force=maybe` would have been true."""
    for bad in ("2", "maybe", "0"):
        with pytest.raises(ConfigError, match=rf"^{key}=.* is out of range: true or false$"):
            run(make_config(f"{key}={bad}"))
    assert not (tmp_path / "outputs").exists()

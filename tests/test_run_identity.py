"""Refactors must not re-train anyone's finished runs: every run kept under docs/results/ still
gets the directory it was written to, both from its stored config.yaml and from a config composed
afresh out of today's YAML with that run's values (so a key added to the YAML, or renamed, that
would enter the identity fails here)."""

from __future__ import annotations

import json

import pytest
from conftest import REPO, compose_config
from omegaconf import OmegaConf

from asymbp import runs
from asymbp.config import GROUPS

STORED = sorted((REPO / "docs" / "results").rglob("config.yaml"))


def _leaves(node: dict, prefix: str = "") -> list[tuple[str, object]]:
    pairs = []
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        pairs += _leaves(value, f"{dotted}.") if isinstance(value, dict) else [(dotted, value)]
    return pairs


def _hydra(value) -> str:
    """A value in Hydra's override grammar: quoted strings, JSON numbers, booleans and null, and
    lists and dicts of them (dict keys bare: feedback.modules' [{match: '*attn*', name: 'bp'}])."""
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_hydra(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_hydra(item) for item in value) + "]"
    return json.dumps(value)


def _override(key: str, value) -> str:
    """++key=value; ++ as presets add keys (optimizer.milestones) that a group's YAML does not
    have."""
    return f"++{key}={_hydra(value)}"


def test_there_are_stored_runs_to_check():
    assert len(STORED) >= 17


@pytest.mark.parametrize("path", STORED, ids=[p.parent.name for p in STORED])
def test_a_kept_run_keeps_its_directory(path):
    stored = OmegaConf.to_container(OmegaConf.load(path))
    assert runs.run_id(OmegaConf.create(stored)) == path.parent.name
    # composed afresh: the groups chosen by name, then every value the run had; a key today's
    # YAML added, or a renamed one, shows in the identity
    choices = [f"{group}={stored[group]['name']}" for group in (*GROUPS, "logger")]
    values = [_override(key, value) for key, value in _leaves(stored)]
    composed = compose_config(*choices, *values)
    assert runs.run_id(composed) == path.parent.name

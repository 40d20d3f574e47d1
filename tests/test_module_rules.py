"""Rules chosen per module (convert's `modules`, the config's feedback.modules): first match wins,
last_layer_bp is one case of it, and a run with per-module rules is its own condition."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import run_cli
from torch import nn

import asymbp
from asymbp import runs
from asymbp.build import module_rules, validate
from asymbp.config import ConfigError
from asymbp.report.labels import value_label
from asymbp.report.read import collect_runs
from asymbp.report.summary import summarize
from asymbp.train import run

SMALL = ["dataset=synthetic", "dataset.train_size=128", "dataset.test_size=64", "epochs=1"]
VIT = ["model=vit", "model.depth=2", "norm=none"]
ATTENTION_BP = "feedback.modules=[{match: '*attn*', name: bp}]"


def chain() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(),
        nn.Linear(8, 3),
    )  # fmt: skip


def gradients(model: nn.Module) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def rules_of(model: nn.Module) -> dict[str, str]:
    return {name: layer.feedback_rule.name for name, layer in asymbp.asymmetric_layers(model)}


def test_first_match_wins_and_the_rest_take_the_main_rule():
    model = asymbp.convert(
        chain(), "usf", seed=0, example_input=torch.zeros(2, 6),
        modules=[("2", "bp"), ("[24]", "rndf"), ("6", "frsf")],
    )  # fmt: skip
    assert rules_of(model) == {"0": "usf", "2": "bp", "4": "rndf", "6": "frsf"}


def test_a_layers_rule_acts_on_the_error_it_sends_down():
    """A layer's rule changes the gradients of the layers below it only: with every layer bp but
    one, the layers above it keep backprop's gradients and those below do not."""
    exact = gradients(chain())
    mixed = asymbp.convert(
        chain(), "bp", seed=0, example_input=torch.zeros(2, 6), modules=[("4", "usf")]
    )
    grads = gradients(mixed)
    for name in ("4.weight", "4.bias", "6.weight", "6.bias"):  # at and above layer 4
        torch.testing.assert_close(grads[name], exact[name])
    for name in ("0.weight", "2.weight"):  # below: the error came through sign(W4)
        assert not torch.allclose(grads[name], exact[name])
    all_bp = asymbp.convert(chain(), "usf", seed=0, modules=[("*", "bp")])
    for name, grad in gradients(all_bp).items():
        assert torch.equal(grad, exact[name])


def test_last_layer_bp_is_the_output_layers_bp_entry():
    example = torch.zeros(2, 6)
    flag = asymbp.convert(chain(), "frsf", seed=0, example_input=example, last_layer_bp=True)
    entry = asymbp.convert(chain(), "frsf", seed=0, example_input=example, modules=[("6", "bp")])
    assert rules_of(flag) == rules_of(entry)
    flag_grads, entry_grads = gradients(flag), gradients(entry)
    for name, grad in flag_grads.items():  # the same draws: the same computation
        assert torch.equal(grad, entry_grads[name])


def test_attention_projections_take_rules_by_their_own_names():
    torch.manual_seed(0)
    model = asymbp.models.build_model(
        "vit", in_channels=1, image_size=8, num_classes=3, batch_norm=False, depth=2
    )
    asymbp.convert(
        model, "usf", seed=0, example_input=torch.zeros(2, 1, 8, 8),
        modules=[("blocks.0.*", "bp"), ("*.v_proj", "rndf"), ("*attn*", "frsf")],
    )  # fmt: skip
    rules = rules_of(model)
    assert {rules[f"blocks.0.attn.{p}"] for p in ("q_proj", "k_proj", "v_proj")} == {"bp"}
    assert rules["blocks.0.mlp.fc1"] == "bp"
    assert rules["blocks.1.attn.v_proj"] == "rndf"
    assert rules["blocks.1.attn.q_proj"] == rules["blocks.1.attn.out_proj"] == "frsf"
    assert rules["blocks.1.mlp.fc2"] == rules["patch_embed"] == rules["head"] == "usf"


def test_a_pattern_that_matches_no_layer_is_an_error():
    with pytest.raises(ValueError, match=r"modules\[0\]: 'atn' matches no layer; the layers are"):
        asymbp.convert(chain(), "usf", modules=[("atn", "bp")])


def test_dfa_on_some_layers_gets_the_output_error():
    model = asymbp.convert(
        chain(), "usf", seed=0, example_input=torch.zeros(2, 6), modules=[("[02]", "dfa")]
    )
    assert rules_of(model) == {"0": "dfa", "2": "dfa", "4": "usf", "6": "usf"}
    assert all(torch.isfinite(g).all() for g in gradients(model).values())
    reference = copy.deepcopy(model)
    with asymbp.exact_backprop(reference):
        exact = gradients(reference)
    assert not torch.allclose(gradients(model)["0.weight"], exact["0.weight"])


def test_the_config_key_is_checked_named_and_part_of_the_identity(make_config):
    plain = make_config(*SMALL, *VIT)
    mixed = make_config(*SMALL, *VIT, ATTENTION_BP)
    validate(mixed)
    assert [(p, r.name) for p, r in module_rules(mixed)] == [("*attn*", "bp")]
    assert module_rules(plain) == [] and "modules" not in runs.identity(plain)["feedback"]
    assert runs.run_id(mixed).startswith("synthetic_vit_usf+bp@attn_none_sgd_s0_")
    assert runs.run_id(mixed) != runs.run_id(plain)


@pytest.mark.parametrize(
    "value, message",
    [
        ("feedback.modules=3", "feedback.modules must be a list of {match: PATTERN, name: RULE"),
        ("feedback.modules=[{name: bp}]", "feedback.modules[0].match=None is out of range"),
        ("feedback.modules=[{match: x}]", "feedback.modules[0] needs a match and a name"),
        ("feedback.modules=[{match: x, name: nope}]", "feedback.modules[0]: feedback='nope' is"),
        ("feedback.modules=[{match: x, name: usf, scale: -1}]", "feedback.modules[0]: "),
    ],
)
def test_bad_module_rules_are_one_config_error(make_config, value, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("{", r"\{")):
        validate(make_config(*SMALL, value))


def test_a_pattern_matching_no_layer_fails_before_anything_is_written(tmp_path):
    out = tmp_path / "outputs"
    result = run_cli(*SMALL, "feedback.modules=[{match: '*atn*', name: bp}]", f"output_root={out}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "'*atn*' matches no layer" in lines[0]
    assert not out.exists()


def test_the_aggregator_shows_per_module_rules_as_a_condition(make_config, tmp_path):
    for extra in ([], [ATTENTION_BP]):
        run(make_config(*SMALL, *VIT, *extra))
    frame = collect_runs([tmp_path / "outputs"])
    summary = summarize(frame)
    assert len(summary) == 2 and set(summary["n"]) == {1}
    labels = {value_label("feedback.modules", v) for v in summary["feedback.modules"]}
    assert labels == {"", "*attn*: bp"}
    assert pd.isna(summary["feedback.modules"]).sum() == 1  # the plain run: no per-module rules

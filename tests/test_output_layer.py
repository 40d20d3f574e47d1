"""The output layer is the one that produces the output: found from the forward pass, not from
registration order, for last_layer_bp, Batch Manhattan's scope=hidden and the depth order."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import compose_config
from omegaconf import OmegaConf
from torch import nn

import asymbp
from asymbp import runs
from asymbp.build import make_model, validate
from asymbp.config import ConfigError
from asymbp.layers import output_layer, trace_layers
from asymbp.optim import output_layer_parameters


class HeadFirst(nn.Module):
    """The issue's model: the head is registered before the body it follows."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(16, 4)
        self.body = nn.Linear(8, 16)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


class SharedTrunk(nn.Module):
    """Head registered first, and a trunk layer used twice in the forward pass."""

    def __init__(self):
        super().__init__()
        self.classifier = nn.Linear(6, 3)
        self.trunk = nn.Linear(6, 6)
        self.stem = nn.Linear(5, 6)

    def forward(self, x):
        h = torch.tanh(self.trunk(torch.tanh(self.stem(x))))
        return self.classifier(torch.tanh(self.trunk(h)))


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 8)
        self.a, self.b = nn.Linear(8, 3), nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.body(x))
        return self.a(h) + self.b(h)


def rules(model):
    return {name: layer.feedback_rule.name for name, layer in asymbp.asymmetric_layers(model)}


@pytest.mark.parametrize("eager", [True, False], ids=["example_input", "first_forward"])
def test_the_issues_model_keeps_exact_backprop_in_its_real_output_layer(eager):
    torch.manual_seed(0)
    x = torch.randn(5, 8)
    reference = HeadFirst()
    model = copy.deepcopy(reference)
    asymbp.convert(model, "usf", last_layer_bp=True, seed=1, example_input=x if eager else None)
    F.cross_entropy(model(x), torch.tensor([0, 1, 2, 3, 0])).backward()
    assert rules(model) == {"body": "usf", "head": "bp"}
    assert output_layer(model)[0] == "head"
    assert [name for name, _ in asymbp.asymmetric_layers(model)] == ["body", "head"]  # depth
    # by hand: the head back-propagates exactly (dW_body from grad_out W_head), the body is usf
    # but has no layer below it, so the body's weight gradient is backprop's
    F.cross_entropy(reference(x), torch.tensor([0, 1, 2, 3, 0])).backward()
    torch.testing.assert_close(model.body.weight.grad, reference.body.weight.grad)
    assert "feedback_magnitude" not in dict(model.named_buffers())


def test_a_head_registered_first_and_a_shared_trunk():
    torch.manual_seed(0)
    x = torch.randn(4, 5)
    model = asymbp.convert(SharedTrunk(), "frsf", last_layer_bp=True, seed=0, example_input=x)
    assert rules(model) == {"stem": "frsf", "trunk": "frsf", "classifier": "bp"}
    assert [name for name, _ in asymbp.asymmetric_layers(model)] == ["stem", "trunk", "classifier"]
    # the classifier takes exact backprop; the stem's gradient comes through frsf's V in the
    # trunk, so it differs from backprop's
    exact = copy.deepcopy(model)
    F.cross_entropy(model(x), torch.tensor([0, 1, 2, 0])).backward()
    with asymbp.exact_backprop(exact):
        F.cross_entropy(exact(x), torch.tensor([0, 1, 2, 0])).backward()
    torch.testing.assert_close(model.classifier.weight.grad, exact.classifier.weight.grad)
    assert not torch.allclose(model.stem.weight.grad, exact.stem.weight.grad)


@pytest.mark.parametrize(
    "build, shape, head",
    [
        (lambda: torchvision.models.resnet18(num_classes=10), (1, 3, 64, 64), "fc"),
        (lambda: torchvision.models.vit_b_16(num_classes=10), (1, 3, 224, 224), "heads.head"),
        (lambda: torchvision.models.alexnet(num_classes=10), (1, 3, 224, 224), "classifier.6"),
    ],
    ids=["resnet18", "vit_b_16", "alexnet"],
)
def test_torchvision_models_keep_the_layer_that_produces_the_logits(build, shape, head):
    torch.manual_seed(0)
    model = asymbp.convert(build(), "usf", last_layer_bp=True, example_input=torch.zeros(shape))
    assert output_layer(model)[0] == head
    found = {name for name, rule in rules(model).items() if rule == "bp"}
    assert found == {head}


def test_several_heads_or_none_is_a_one_line_error_naming_the_key():
    with pytest.raises(ValueError, match=r"2 layers \(a, b\): name the output layer with "):
        asymbp.convert(TwoHeads(), "usf", last_layer_bp=True, example_input=torch.zeros(2, 4))
    model = asymbp.convert(TwoHeads(), "usf", last_layer_bp=True, output_layer="b",
                           example_input=torch.zeros(2, 4))  # fmt: skip
    assert rules(model) == {"body": "usf", "a": "usf", "b": "bp"}
    lazy = asymbp.convert(TwoHeads(), "usf", last_layer_bp=True)
    with pytest.raises(ValueError, match="output_layer=NAME"):
        lazy(torch.zeros(2, 4))
    class Residue(nn.Module):
        """A layer that runs, but the output is computed from the input alone."""

        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(4, 4)

        def forward(self, x):
            self.inner(x)
            return x.sum(1, keepdim=True)

    with pytest.raises(ValueError, match="no covered layer"):
        asymbp.convert(Residue(), "usf", last_layer_bp=True, example_input=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="'nope' is not a layer convert covers"):
        asymbp.convert(TwoHeads(), "usf", output_layer="nope", example_input=torch.zeros(2, 4))
    # without last_layer_bp, several heads are fine (nothing asks for "the" output layer)
    asymbp.convert(TwoHeads(), "usf", example_input=torch.zeros(2, 4))


def test_tracing_changes_no_state_and_draws_nothing():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Dropout(0.5), nn.Linear(6, 2))
    before = copy.deepcopy(model.state_dict())
    x = torch.randn(8, 4)
    generator_state = torch.get_rng_state()
    found, order = trace_layers(model, x)
    assert (found, order) == (["3"], ["0", "3"])
    assert torch.equal(torch.get_rng_state(), generator_state)  # no dropout, no feedback drawn
    assert model.training and model[1].training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_paper_models_keep_their_output_layer_and_run_identity():
    for name in ("mlp", "paper_cnn", "lenet5", "resnet20"):
        cfg = compose_config(f"model={name}", "feedback=usf", "feedback.last_layer_bp=true")
        model = make_model(cfg, (1, 8, 8) if name != "lenet5" else (1, 32, 32), 10)
        last = [n for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)][-1]
        assert output_layer(model)[0] == last  # the same layer as registration order gave
        assert rules(model)[last] == "bp"
    cfg = compose_config()
    without = OmegaConf.create(OmegaConf.to_container(cfg))
    del without["output_layer"]
    assert runs.run_id(cfg) == runs.run_id(without)  # the new key at null: same directories
    named = compose_config("output_layer=fc")
    assert runs.run_id(named) != runs.run_id(cfg)


def test_output_layer_key_is_validated_and_reaches_convert_and_batch_manhattan():
    with pytest.raises(ConfigError, match="output_layer=3 is out of range"):
        validate(compose_config("output_layer=3"))
    cfg = compose_config("model=mlp", "output_layer=nope")
    with pytest.raises(ConfigError, match="'nope' is not a layer convert covers"):
        make_model(cfg, (1, 8, 8), 10)
    cfg = compose_config("model=mlp", "norm=bn_bm", "norm.scope=hidden")
    model = make_model(cfg, (1, 8, 8), 10)
    name, layer = output_layer(model)
    assert [p for p in output_layer_parameters(model)] == [layer.weight, layer.bias]


def test_dfa_keeps_its_real_output_layer_exact_and_metrics_follow_the_forward_order():
    torch.manual_seed(0)
    x, y = torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    model = asymbp.convert(HeadFirst(), "dfa", last_layer_bp=True, seed=0, example_input=x)
    assert rules(model) == {"body": "dfa", "head": "bp"}
    F.cross_entropy(model(x), y).backward()
    # the body's weight gradient under DFA with an exact head is backprop's here (one hidden
    # layer: its error is e W_head either way), and the order of the metrics is the depth order
    reference = copy.deepcopy(model)
    reference.zero_grad()
    with asymbp.exact_backprop(reference):
        F.cross_entropy(reference(x), y).backward()
    torch.testing.assert_close(model.body.weight.grad, reference.body.weight.grad)
    local = asymbp.convert(HeadFirst(), "usf", example_input=x)
    assert list(asymbp.metrics.weight_alignment(local)) == ["body", "head"]  # not registration

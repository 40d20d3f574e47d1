"""Alignment metrics: angles and sign concordance, computed without disturbing training state."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import asymbp
from asymbp.metrics import angle_degrees, sign_concordance


def model(rule, **options):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)
    )
    return asymbp.convert(net, rule, seed=1, **options)


def batch():
    gen = torch.Generator().manual_seed(2)
    return torch.randn(8, 2, 4, 4, generator=gen), torch.randint(0, 3, (8,), generator=gen)


def test_angle_and_concordance_hand_values():
    assert angle_degrees(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])) == pytest.approx(90.0)
    assert angle_degrees(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0])) == pytest.approx(45.0)
    assert angle_degrees(torch.tensor([1.0, 2.0]), torch.tensor([-2.0, -4.0])) == pytest.approx(
        180.0
    )
    assert math.isnan(angle_degrees(torch.zeros(3), torch.ones(3)))
    assert (
        sign_concordance(torch.tensor([1.0, -2.0, 3.0, -1.0]), torch.tensor([2.0, -1.0, -1.0, 1.0]))
        == 0.5
    )


def test_weight_alignment_per_rule():
    bp = asymbp.weight_alignment(model("bp"))
    assert set(bp) == {"0", "4"}
    assert bp["0"] == {"angle_VW": pytest.approx(0.0, abs=1e-3), "concordance": 1.0}
    usf = asymbp.weight_alignment(model("usf"))
    w = model("usf")[4].weight
    assert usf["4"]["angle_VW"] == pytest.approx(angle_degrees(torch.sign(w), w))
    assert 0 < usf["4"]["angle_VW"] < 90
    sc = asymbp.weight_alignment(model("sc", concordance=0.0))
    assert sc["4"]["concordance"] == 0.0 and sc["4"]["angle_VW"] > 90
    rndf = asymbp.weight_alignment(model("rndf"))
    assert rndf["4"]["angle_VW"] == pytest.approx(90, abs=15)


def test_error_alignment_is_zero_for_bp_and_positive_for_asymmetric_rules():
    x, y = batch()
    bp = asymbp.error_alignment(model("bp"), x, y)
    assert set(bp) == {"0", "4"}
    assert all(angle == pytest.approx(0.0, abs=1e-3) for angle in bp.values())
    usf = asymbp.error_alignment(model("usf"), x, y)
    # The output layer's input error goes through sign(W) instead of W; the first layer's input
    # error through both layers' V.
    assert 0 < usf["4"] < 90 and 0 < usf["0"] < 90


def test_error_alignment_of_last_layer_matches_hand_computation():
    """Error at the output layer's input: dL/dz @ V (asymmetric) vs dL/dz @ W (true)."""
    net = model("usf")
    x, y = batch()
    angles = asymbp.error_alignment(net, x, y)
    features = net[:4](x).detach()
    logits = net[4](features)
    delta = torch.autograd.grad(F.cross_entropy(logits, y), logits)[0]
    w = net[4].weight.detach()
    assert angles["4"] == pytest.approx(angle_degrees(delta @ torch.sign(w), delta @ w), abs=1e-4)


def test_error_alignment_leaves_training_state_untouched():
    net = model("brsf")
    x, y = batch()
    net(x).sum().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    buffers = copy.deepcopy(dict(net.named_buffers()))
    rng = torch.random.get_rng_state()
    asymbp.error_alignment(net, x, y)
    asymbp.weight_alignment(net)
    assert all(torch.equal(p.grad, g) for p, g in zip(net.parameters(), grads, strict=True))
    for name, b in net.named_buffers():
        assert torch.equal(b, buffers[name]), name
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert net.training
    assert not any(layer.exact for _, layer in asymbp.asymmetric_layers(net))

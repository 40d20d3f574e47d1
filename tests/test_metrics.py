"""Alignment metrics: angles and sign concordance, computed without disturbing training state."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import asymbp
from asymbp.metrics import angle_degrees, cosine, norm_ratio, sign_concordance


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
    assert bp["0"] == {
        "angle_VW": pytest.approx(0.0, abs=1e-3),
        "concordance": 1.0,
        "norm_VW": pytest.approx(1.0),
    }
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


def test_cosine_and_norm_ratio_hand_values():
    assert cosine(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])) == pytest.approx(0.5**0.5)
    assert cosine(torch.tensor([[1.0, 2.0]]), torch.tensor([[-2.0, -4.0]])) == pytest.approx(-1.0)
    assert math.isnan(cosine(torch.zeros(2), torch.ones(2)))
    assert norm_ratio(torch.tensor([3.0, 4.0]), torch.tensor([0.0, 10.0])) == pytest.approx(0.5)
    assert math.isnan(norm_ratio(torch.ones(2), torch.zeros(2)))


def test_norm_ratio_per_rule_and_none_for_dfa():
    usf = model("usf")
    w = usf[4].weight
    expected = torch.sign(w).norm() / w.norm()
    assert asymbp.weight_alignment(usf)["4"]["norm_VW"] == pytest.approx(expected.item())
    assert asymbp.weight_alignment(model("usf", scale=2.0))["4"]["norm_VW"] == pytest.approx(
        2 * expected.item()
    )
    assert asymbp.weight_alignment(model("dfa")) == {}  # no V shaped like W


def test_grad_cosine_of_last_layer_matches_hand_computation():
    """Output layer: its weight gradient is delta^T h under every local rule, so the cosine is 1;
    the hidden conv layer's gradient differs from backprop's (cosine < 1), and equals
    the cosine of the two gradients computed with and without exact backprop."""
    net = model("usf")
    x, y = batch()
    alignment = asymbp.backward_alignment(net, x, y)
    assert alignment["4"]["grad_cosine"] == pytest.approx(1.0)
    assert alignment["4"]["angle_error"] == pytest.approx(asymbp.error_alignment(net, x, y)["4"])

    def conv_grad(exact):
        copy_ = copy.deepcopy(net)
        copy_.zero_grad()
        if exact:
            with asymbp.exact_backprop(copy_):
                F.cross_entropy(copy_(x), y).backward()
        else:
            F.cross_entropy(copy_(x), y).backward()
        return copy_[0].weight.grad

    expected = cosine(conv_grad(False), conv_grad(True))
    assert alignment["0"]["grad_cosine"] == pytest.approx(expected, abs=1e-6)
    assert 0 < expected < 0.999
    assert all(v["grad_cosine"] == pytest.approx(1.0) for v in asymbp.backward_alignment(
        model("bp"), x, y).values())  # fmt: skip


def test_dfa_alignment_compares_e_b_with_the_true_error():
    net = model("dfa")
    x, y = batch()
    alignment = asymbp.backward_alignment(net, x, y)
    logits = net(x)
    e = torch.autograd.grad(F.cross_entropy(logits, y), logits)[0]
    layer = net[4]
    b = layer.feedback_rule.direct_feedback(layer.feedback_state(), 3, (64,)).float()
    true = e @ layer.weight.detach()
    assert alignment["4"]["angle_error"] == pytest.approx(angle_degrees(e @ b, true), abs=1e-3)
    assert alignment["4"]["grad_cosine"] == pytest.approx(1.0)

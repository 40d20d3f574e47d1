"""Kolen-Pollack, weight mirror and direct feedback alignment: hand values, state, norms."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import compose_config
from torch import nn

import asymbp
from asymbp.build import make_model, make_optimizer
from asymbp.config import ConfigError
from asymbp.layers import update_feedback, update_feedback_after_steps
from asymbp.metrics import angle_degrees
from asymbp.models import build_model
from asymbp.optim import BatchManhattan


def two_layers(rule, seed=0, **options):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    return asymbp.convert(net, rule, seed=seed, **options)


def step(model, optimizer, x, y):
    optimizer.zero_grad()
    F.cross_entropy(model(x), y).backward()
    optimizer.step()


def data(n=8, features=6, classes=3, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=gen, dtype=torch.float64)
    return x, torch.randint(0, classes, (n,), generator=gen)


# ------------------------------------------------------------------------------------ Kolen-Pollack


def test_kp_v_minus_w_decays_by_one_minus_lr_wd_per_sgd_step():
    model = two_layers("kp")
    lr, wd, t = 0.1, 0.05, 7
    layers = [layer for _, layer in asymbp.asymmetric_layers(model)]
    gaps0 = [(layer.backward_weight - layer.weight).detach().clone() for layer in layers]
    assert all(gap.abs().min() > 0 for gap in gaps0)  # V starts apart from W
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=wd)
    x, y = data()
    for _ in range(t):
        step(model, optimizer, x, y)
    for layer, gap0 in zip(layers, gaps0, strict=True):
        gap = (layer.backward_weight - layer.weight).detach()
        torch.testing.assert_close(gap, gap0 * (1 - lr * wd) ** t, rtol=1e-10, atol=1e-14)
    # and W did learn: the gap's decay is not W standing still
    assert not torch.equal(layers[0].weight, layers[0].weight.detach() * 0 + gaps0[0])


def kp_optimizer(kind, model):
    if kind == "momentum":
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    if kind == "adam":
        return torch.optim.Adam(model.parameters(), lr=0.01)
    sgd = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scope, sign_of = kind.split("-")[1:]
    return BatchManhattan(sgd, scope=scope, sign_of=sign_of, model=model)


@pytest.mark.parametrize(
    "kind", ["momentum", "adam", "bm-all-gradient", "bm-weights-gradient", "bm-all-update"]
)
def test_kp_v_takes_exactly_ws_step_under_every_optimizer(kind):
    """Without weight decay V's update is W's own, so V - W never changes: momentum, Adam's
    moments and Batch Manhattan's sign treat V as they treat W."""
    model = two_layers("kp")
    optimizer = kp_optimizer(kind, model)
    layers = [layer for _, layer in asymbp.asymmetric_layers(model)]
    gaps0 = [(layer.backward_weight - layer.weight).detach().clone() for layer in layers]
    w0 = layers[0].weight.detach().clone()
    x, y = data()
    for _ in range(4):
        step(model, optimizer, x, y)
    assert not torch.allclose(layers[0].weight, w0)
    for layer, gap0 in zip(layers, gaps0, strict=True):
        torch.testing.assert_close(layer.backward_weight - layer.weight, gap0, rtol=0, atol=1e-14)
        if kind.endswith("gradient"):  # BM-SGD leaves the gradients signed
            assert set(layer.backward_weight.grad.unique().tolist()) <= {-1.0, 0.0, 1.0}


def test_kp_v_is_in_ws_parameter_group_and_in_batch_manhattan_weights():
    model = two_layers("kp")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    group = optimizer.param_groups[0]["params"]
    for _, layer in asymbp.asymmetric_layers(model):
        assert any(p is layer.backward_weight for p in group)
    weights = asymbp.optim.layer_weights(model)
    assert sum(any(w is p for p in model.parameters()) for w in weights) == 4


def test_kp_state_round_trips_and_moves_with_the_model():
    model = two_layers("kp")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    x, y = data()
    step(model, optimizer, x, y)
    saved = copy.deepcopy((model.state_dict(), optimizer.state_dict()))
    assert "0.backward_weight" in saved[0]
    step(model, optimizer, x, y)
    expected = model[0].backward_weight.detach().clone()

    other = two_layers("kp", seed=5)
    other_optimizer = torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    other.load_state_dict(saved[0])
    other_optimizer.load_state_dict(saved[1])
    step(other, other_optimizer, x, y)
    assert torch.equal(other[0].backward_weight, expected)
    other.float()
    assert other[0].backward_weight.dtype == torch.float32
    assert isinstance(other[0].backward_weight, nn.Parameter)


# ----------------------------------------------------------------------------------- weight mirror


@pytest.mark.parametrize(
    "net",
    [
        lambda: nn.Sequential(nn.Linear(40, 30)),
        lambda: nn.Sequential(nn.Conv2d(6, 8, 3, padding=1)),
        lambda: nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, dilation=2, groups=2)),
    ],
    ids=["linear", "conv", "conv-strided-dilated-grouped"],
)
def test_wm_aligns_v_with_a_fixed_w(net):
    torch.manual_seed(0)
    model = asymbp.convert(net(), "wm", seed=0, warmup_steps=0)
    layer = model[0]
    assert angle_degrees(layer.feedback_weight(), layer.weight) > 60  # a random start
    for _ in range(400):
        update_feedback(model)
    assert angle_degrees(layer.feedback_weight(), layer.weight) < 10
    ratio = layer.feedback_weight().norm() / layer.weight.norm()
    assert ratio.item() == pytest.approx(1.0, abs=0.1)  # lr * noise_std^2 / weight_decay = 1
    assert int(layer.mirror_calls) == 400


def test_wm_update_is_v_decayed_plus_lr_times_noise_correlation():
    """One mirror step written out: V' = (1 - wd) V + lr * y^T x / n, y = x W^T, with the very
    noise the layer draws (replayed from the random state)."""
    model = asymbp.convert(nn.Sequential(nn.Linear(5, 4)).double(), "wm", seed=0, warmup_steps=0,
                           batch=7, noise_std=0.5, lr=0.3, weight_decay=0.2)  # fmt: skip
    layer = model[0]
    v0 = layer.backward_weight.clone()
    rng = torch.random.get_rng_state()
    update_feedback(model)
    torch.random.set_rng_state(rng)
    x = 0.5 * torch.randn(7, 5, dtype=torch.float64)
    y = x @ layer.weight.detach().T
    expected = 0.8 * v0 + 0.3 * (y.T @ x) / 7
    torch.testing.assert_close(layer.backward_weight, expected, rtol=1e-12, atol=1e-14)


def test_wm_conv_correlation_by_hand():
    """The convolutional y x^T: sum over samples and output positions of y[o] times the input
    patch under kernel tap (i, j), divided by samples x positions."""
    torch.manual_seed(3)
    conv = asymbp.convert(nn.Sequential(nn.Conv2d(2, 3, 2, stride=2)).double(), "wm")[0]
    x, y = conv.noise_response(5, 1.0)
    assert x.shape == (5, 2, 2 + 2 * 3, 2 + 2 * 3) and y.shape == (5, 3, 4, 4)
    expected = torch.zeros(3, 2, 2, 2, dtype=torch.float64)
    for p in range(4):
        for q in range(4):
            patch = x[:, :, 2 * p : 2 * p + 2, 2 * q : 2 * q + 2]  # (n, c, i, j)
            expected += torch.einsum("no,ncij->ocij", y[:, :, p, q], patch)
    torch.testing.assert_close(conv.weight_correlation(x, y), expected / (5 * 16))


def test_wm_every_steps_and_warmup_schedule(monkeypatch):
    model = asymbp.convert(nn.Sequential(nn.Linear(3, 2)), "wm", every=3, steps=2, warmup_steps=4)
    layer = model[0]
    calls = []
    original = layer.noise_response
    monkeypatch.setattr(layer, "noise_response", lambda *a: calls.append(1) or original(*a))
    counts = []
    for _ in range(7):
        update_feedback(model)
        counts.append(len(calls))
    # call 0: 4 warm-up + 2; calls 3 and 6: 2 each; the others none
    assert counts == [6, 6, 6, 8, 8, 8, 10]


def test_wm_runs_after_each_optimizer_step_and_resumes_identically():
    def build():
        model = two_layers("wm", warmup_steps=3)
        optimizer = BatchManhattan(torch.optim.SGD(model.parameters(), lr=0.01))
        update_feedback_after_steps(model, optimizer)
        return model, optimizer

    model, optimizer = build()
    x, y = data()
    step(model, optimizer, x, y)
    assert int(model[0].mirror_calls) == 1
    saved = copy.deepcopy(
        (model.state_dict(), optimizer.state_dict(), torch.random.get_rng_state())
    )
    for _ in range(2):
        step(model, optimizer, x, y)
    other, other_optimizer = build()
    other.load_state_dict(saved[0])
    other_optimizer.load_state_dict(saved[1])
    torch.random.set_rng_state(saved[2])
    for _ in range(2):
        step(other, other_optimizer, x, y)
    assert int(other[0].mirror_calls) == 3
    for key, value in model.state_dict().items():
        assert torch.equal(other.state_dict()[key], value), key


def test_no_update_hook_for_rules_that_do_not_learn_between_steps():
    model = two_layers("kp")
    assert update_feedback_after_steps(model, torch.optim.SGD(model.parameters(), lr=0.1)) is None


# ------------------------------------------------------------------------------ direct feedback


def direct_b(layer, classes, input_shape):
    return layer.feedback_rule.direct_feedback(layer.feedback_state(), classes, input_shape)


def test_dfa_mlp_gradients_by_hand():
    """x -> Linear1 -> BN -> ReLU -> Linear2 -> tanh -> Linear3 -> logits, cross-entropy. DFA:
    delta3 = e; delta2 = (e B3) * tanh'; delta1 = BN'(e B2 * relu') ; dW_l = delta_l^T h_(l-1)."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)
    ).double()
    model = asymbp.convert(net, "dfa", seed=2)
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.5, 0.5)
    n = 10
    x, y = data(n=n, features=4, classes=3, seed=4)
    F.cross_entropy(model(x), y).backward()

    w1, b1 = model[0].weight.detach(), model[0].bias.detach()
    gamma, beta = model[1].weight.detach(), model[1].bias.detach()
    w2, b2 = model[3].weight.detach(), model[3].bias.detach()
    w3, b3 = model[5].weight.detach(), model[5].bias.detach()
    a1 = x @ w1.T + b1
    mu, var = a1.mean(0), a1.var(0, unbiased=False)
    sigma = (var + model[1].eps).sqrt()
    xhat = (a1 - mu) / sigma
    h1 = (gamma * xhat + beta).clamp_min(0)
    a2 = h1 @ w2.T + b2
    h2 = a2.tanh()
    z = h2 @ w3.T + b3
    e = (z.softmax(1) - F.one_hot(y, 3)) / n  # dL/dz of the mean cross-entropy

    big_b3, big_b2 = direct_b(model[5], 3, (5,)), direct_b(model[3], 3, (6,))
    delta2 = (e @ big_b3) * (1 - h2**2)
    g = (e @ big_b2) * (gamma * xhat + beta > 0) * gamma  # dL/dxhat
    delta1 = (g - g.mean(0) - xhat * (g * xhat).mean(0)) / sigma
    torch.testing.assert_close(model[5].weight.grad, e.T @ h2)
    torch.testing.assert_close(model[3].weight.grad, delta2.T @ h1)
    torch.testing.assert_close(model[3].bias.grad, delta2.sum(0))
    torch.testing.assert_close(model[0].weight.grad, delta1.T @ x)
    torch.testing.assert_close(model[0].bias.grad, delta1.sum(0), atol=1e-12, rtol=0)
    # and not backprop's: the hidden gradients differ from the exact ones
    exact = copy.deepcopy(net)
    with asymbp.exact_backprop(exact):
        exact.zero_grad()
        F.cross_entropy(exact(x), y).backward()
    assert not torch.allclose(exact[3].weight.grad, model[3].weight.grad)
    torch.testing.assert_close(exact[5].weight.grad, model[5].weight.grad)


def first_conv_by_hand(model, n, seed, y):
    """A backward pass of the cross-entropy on n random 1x4x4 inputs, and the first layer's
    (a 1 -> 2 channel 3x3 convolution, padding 1) input x, padded input and output, by hand."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 4, 4, generator=gen, dtype=torch.float64)
    F.cross_entropy(model(x), y).backward()
    w, b = model[0].weight.detach(), model[0].bias.detach()
    xp = F.pad(x, (1, 1, 1, 1))
    a = torch.zeros(n, 2, 4, 4, dtype=torch.float64)
    for o in range(2):
        for p in range(4):
            for q in range(4):
                a[:, o, p, q] = (xp[:, 0, p : p + 3, q : q + 3] * w[o, 0]).sum((1, 2)) + b[o]
    return x, xp, a


def test_dfa_cnn_gradients_by_hand():
    """conv3x3 (pad 1) -> ReLU -> max-pool 2 -> flatten -> Linear -> logits. The conv layer's
    error is e B_fc, reshaped to the pooled map, routed to each window's max, times relu'."""
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3)
    ).double()
    model = asymbp.convert(net, "dfa", seed=3)
    n, y = 4, torch.tensor([0, 1, 2, 1])
    x, xp, a = first_conv_by_hand(model, n, seed=5, y=y)
    w = model[0].weight.detach()
    h = a.clamp_min(0)
    pooled = torch.zeros(n, 2, 2, 2, dtype=torch.float64)
    argmax = {}
    for i in range(n):
        for o in range(2):
            for p in range(2):
                for q in range(2):
                    window = h[i, o, 2 * p : 2 * p + 2, 2 * q : 2 * q + 2]
                    k = int(window.flatten().argmax())
                    argmax[i, o, p, q] = (2 * p + k // 2, 2 * q + k % 2)
                    pooled[i, o, p, q] = window.flatten()[k]
    z = pooled.flatten(1) @ model[4].weight.detach().T + model[4].bias.detach()
    e = (z.softmax(1) - F.one_hot(y, 3)) / n
    error_at_fc_input = (e @ direct_b(model[4], 3, (8,))).view(n, 2, 2, 2)
    delta = torch.zeros(n, 2, 4, 4, dtype=torch.float64)
    for (i, o, p, q), (r, c) in argmax.items():
        delta[i, o, r, c] = error_at_fc_input[i, o, p, q] * (a[i, o, r, c] > 0)
    expected_dw = torch.zeros_like(w)
    for i_ in range(3):
        for j_ in range(3):
            expected_dw[:, 0, i_, j_] = torch.einsum(
                "nopq,npq->o", delta, xp[:, 0, i_ : i_ + 4, j_ : j_ + 4]
            )
    torch.testing.assert_close(model[0].weight.grad, expected_dw)
    torch.testing.assert_close(model[0].bias.grad, delta.sum((0, 2, 3)))
    torch.testing.assert_close(model[4].weight.grad, e.T @ pooled.flatten(1))


def test_dfa_biotorch_draw_conv_error_by_hand():
    """draw=biotorch (biotorch/layers/dfa/conv.py): a conv layer's input error is e copied to
    every output position, sent back by the layer's transposed convolution with a kernel B:
    E[n, c, i, j] = sum over k, output (p, q), tap (u, v) with i = 2p + u - 1, j = 2q + v - 1
    of e[n, k] B[k, c, u, v]. conv1 (pad 1) -> ReLU -> conv2 (stride 2, pad 1) -> ReLU ->
    flatten -> Linear; conv1's weight gradient is then the local one of E * relu'."""
    torch.manual_seed(2)
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 3, 3, stride=2, padding=1),
        nn.ReLU(), nn.Flatten(), nn.Linear(12, 4),
    ).double()  # fmt: skip
    model = asymbp.convert(net, "dfa", seed=5, draw="biotorch")
    n, y = 3, torch.tensor([0, 3, 1])
    x, xp, a1 = first_conv_by_hand(model, n, seed=6, y=y)
    w1 = model[0].weight.detach()
    h1 = a1.clamp_min(0)
    z = model[5](model[4](model[3](model[2](h1)))).detach()
    e = (z.softmax(1) - F.one_hot(y, 4)) / n
    kernel = model[2].feedback_rule.direct_feedback(
        model[2].feedback_state(), 4, (2, 4, 4), tuple(model[2].weight.shape)
    )
    assert tuple(kernel.shape) == (4, 2, 3, 3)
    error = torch.zeros(n, 2, 4, 4, dtype=torch.float64)
    for p in range(2):
        for q in range(2):
            for u in range(3):
                for v in range(3):
                    i, j = 2 * p + u - 1, 2 * q + v - 1
                    if 0 <= i < 4 and 0 <= j < 4:
                        error[:, :, i, j] += e @ kernel[:, :, u, v]
    delta1 = error * (a1 > 0)
    expected = torch.zeros_like(w1)
    for u in range(3):
        for v in range(3):
            window = xp[:, 0, u : u + 4, v : v + 4]
            expected[:, 0, u, v] = torch.einsum("noij,nij->o", delta1, window)
    torch.testing.assert_close(model[0].weight.grad, expected)
    torch.testing.assert_close(model[0].bias.grad, delta1.sum((0, 2, 3)))


def test_dfa_b_is_fixed_by_the_seed_and_survives_state_dict():
    a = two_layers("dfa", seed=0)
    b = two_layers("dfa", seed=1)
    assert not torch.equal(direct_b(a[2], 3, (5,)), direct_b(b[2], 3, (5,)))
    b.load_state_dict(a.state_dict())
    assert torch.equal(direct_b(a[2], 3, (5,)), direct_b(b[2], 3, (5,)))
    bound = 1 / 6**0.5  # 1 / sqrt(input size)
    values = direct_b(a[0], 3, (6,))
    assert values.abs().max() <= bound and values.std() > bound / 3


def test_dfa_with_last_layer_bp_sends_e_w_from_the_output_layer():
    model = two_layers("dfa", last_layer_bp=True)
    x, y = data()
    x.requires_grad_(True)
    z = model(x)
    h = model[:2](x)
    e = torch.autograd.grad(F.cross_entropy(z, y), z, retain_graph=True)[0]
    F.cross_entropy(z, y).backward()
    delta = (e @ model[2].weight.detach()) * (1 - h.detach() ** 2)  # exact at the output layer
    torch.testing.assert_close(model[0].weight.grad, delta.T @ x.detach())
    torch.testing.assert_close(x.grad, e @ direct_b(model[0], 3, (6,)))


def test_dfa_refuses_residual_models_with_one_line():
    cfg = compose_config("feedback=dfa", "model=resnet20")
    with pytest.raises(ConfigError, match=r"^feedback=dfa with model=resnet20: .*residual") as info:
        make_model(cfg, (3, 32, 32), 10)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="sequential model"):
        resnet = build_model(
            "resnet18", in_channels=3, image_size=32, num_classes=10, batch_norm=True
        )
        asymbp.convert(resnet, "dfa")


# ------------------------------------------------------------------ every stabilization, last layer


STABILIZED = [(rule, norm, False) for rule in ("kp", "wm", "dfa") for norm in ("none", "bn", "bm")]
STABILIZED += [(rule, "bn_bm", last) for rule in ("kp", "wm", "dfa") for last in (False, True)]


@pytest.mark.parametrize("rule, norm, last_layer_bp", STABILIZED)
def test_new_rules_train_under_every_stabilization(rule, norm, last_layer_bp):
    overrides = [f"feedback={rule}", f"norm={norm}", f"feedback.last_layer_bp={last_layer_bp}"]
    if rule == "wm":
        overrides.append("feedback.warmup_steps=10")
    cfg = compose_config(*overrides, "model=paper_cnn")
    torch.manual_seed(0)
    model = make_model(cfg, (1, 8, 8), 4)
    optimizer = make_optimizer(cfg, model)
    update_feedback_after_steps(model, optimizer)  # as the training loop does (weight mirror)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 8, 8, generator=gen)
    y = (x.flatten(1) @ torch.randn(64, 4, generator=gen)).argmax(1)  # learnable labels
    first = model.features[0]
    w0 = first.weight.detach().clone()
    v0 = None if rule == "dfa" else first.feedback_weight().clone()
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(loss) for loss in losses)
    if (rule, norm) != ("dfa", "bm"):  # DFA under BM without BN does not fit it in 20 steps
        assert losses[-1] < losses[0] - 0.01
    assert not torch.equal(first.weight, w0)
    if v0 is not None:  # kp and wm learn V in the hidden layers
        assert not torch.equal(first.feedback_weight(), v0)
    output_layer = model.classifier[-1]
    assert output_layer.feedback_rule.name == ("bp" if last_layer_bp else rule)


@pytest.mark.parametrize("name, size", [("mlp", 8), ("paper_cnn", 28), ("lenet5", 28)])
def test_dfa_trains_every_sequential_model(name, size):
    """Every hidden layer of asymbp's sequential models gets a DFA gradient (e B through the exact
    local derivatives), different from backprop's, and a few steps fit a batch."""
    torch.manual_seed(0)
    model = asymbp.convert(
        build_model(name, in_channels=1, image_size=size, num_classes=4, batch_norm=True), "dfa"
    )
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 1, size, size, generator=gen)
    y = torch.randint(0, 4, (16,), generator=gen)
    alignment = asymbp.backward_alignment(model, x, y)
    hidden = list(alignment)[:-1]
    assert all(alignment[layer]["grad_cosine"] < 0.999 for layer in hidden)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(10):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        losses.append(loss.item())
        optimizer.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert losses[-1] < losses[0]

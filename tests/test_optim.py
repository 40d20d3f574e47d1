"""Batch Manhattan: steps on the sign of the mini-batch gradient."""

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import asymbp
from asymbp import BatchManhattan


def net(batch_norm=False):
    torch.manual_seed(0)
    middle = nn.BatchNorm1d(5) if batch_norm else nn.Tanh()
    return nn.Sequential(nn.Linear(6, 5), middle, nn.ReLU(), nn.Linear(5, 3))


def backward(model, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(8, 6, generator=gen), torch.randint(0, 3, (8,), generator=gen)
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()


def test_every_weight_with_nonzero_gradient_moves_by_exactly_lr():
    model = net()
    backward(model)
    with torch.no_grad():
        model[0].weight.grad[0, :3] = 0.0  # some exactly-zero gradients must not move
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    BatchManhattan(torch.optim.SGD(model.parameters(), lr=0.1)).step()
    moved = 0
    for name, p in model.named_parameters():
        expected = before[name] - 0.1 * torch.sign(grads[name])
        assert torch.equal(p.detach(), expected), name
        delta = (p.detach() - before[name]).abs()
        nonzero = grads[name] != 0
        torch.testing.assert_close(delta[nonzero], torch.full_like(delta[nonzero], 0.1))
        assert torch.equal(delta[~nonzero], torch.zeros_like(delta[~nonzero]))
        moved += int(nonzero.sum())
    assert moved == sum(p.numel() for p in model.parameters()) - 3


def test_momentum_and_weight_decay_act_on_the_sign():
    """BM-SGD of Xiao et al.: buf = mu * buf + sign(g) + wd * w; w -= lr * buf."""
    model = net()
    reference = copy.deepcopy(model)
    bm = BatchManhattan(
        torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-2),
        sign_of="gradient",
    )
    plain = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-2)
    for step in range(3):
        backward(model, seed=step)
        backward(reference, seed=step)
        for p in reference.parameters():
            p.grad = torch.sign(p.grad)
        bm.step()
        plain.step()
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b)


def test_weights_scope_leaves_biases_and_norm_parameters_alone():
    model = net(batch_norm=True)
    backward(model)
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    BatchManhattan(torch.optim.SGD(model.parameters(), lr=0.1), scope="weights", model=model).step()
    for name, p in model.named_parameters():
        signed = name in ("0.weight", "3.weight")
        step = torch.sign(grads[name]) if signed else grads[name]
        assert torch.equal(p.detach(), before[name] - 0.1 * step), name


@pytest.mark.parametrize("sign_of", ["gradient", "update"])
def test_hidden_scope_gives_the_output_layer_the_plain_step_at_its_own_rate(sign_of):
    """Xiao et al. 2018's default: every parameter but the last layer's is signed; the last layer
    (weight and bias) takes plain SGD at its group's rate. One step from zero momentum."""
    # no BN: a bias before BN has a ~0 gradient whose update rounds to no move
    model = asymbp.convert(net(), "bp", example_input=torch.zeros(2, 6))
    output = [model[3].weight, model[3].bias]
    hidden = [p for p in model.parameters() if all(p is not q for q in output)]
    sgd = torch.optim.SGD([{"params": hidden, "lr": 1e-3}, {"params": output, "lr": 0.5}], lr=1e-3)
    bm = BatchManhattan(sgd, scope="hidden", sign_of=sign_of, model=model)
    backward(model)
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    bm.step()
    for name, p in model.named_parameters():
        if name.startswith("3."):
            expected = before[name] - 0.5 * grads[name]
        else:  # from zero momentum, the update's sign is the gradient's
            expected = before[name] - 1e-3 * torch.sign(grads[name])
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-7, msg=name)


def test_hidden_scope_through_the_config_puts_the_output_layer_at_optimizer_lr():
    from conftest import compose_config

    from asymbp.build import make_optimizer

    cfg = compose_config(
        "norm=bn_bm", "norm.scope=hidden", "optimizer.lr=0.02", "optimizer.bm_lr=0.0003"
    )
    model = asymbp.convert(net(batch_norm=True), "bp", example_input=torch.zeros(2, 6))
    groups = make_optimizer(cfg, model).param_groups
    assert [g["lr"] for g in groups] == [0.0003, 0.02]
    assert groups[1]["params"] == [model[3].weight, model[3].bias]
    assert len(groups[0]["params"]) == len(list(model.parameters())) - 2


def test_sign_of_update_moves_by_lr_in_the_direction_of_the_momentum_update():
    model = net()
    bm = BatchManhattan(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), sign_of="update")
    backward(model, seed=0)
    bm.step()
    backward(model, seed=1)
    second_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    buffers = {n: bm.state[p]["momentum_buffer"].clone() for n, p in model.named_parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    bm.step()
    for name, p in model.named_parameters():
        smoothed = 0.9 * buffers[name] + second_grads[name]
        torch.testing.assert_close(p.detach(), before[name] - 0.1 * torch.sign(smoothed))


def test_state_dict_round_trip_and_scheduler():
    model = net()
    bm = BatchManhattan(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    scheduler = torch.optim.lr_scheduler.StepLR(bm, step_size=1, gamma=0.5)
    backward(model)
    bm.step()
    scheduler.step()
    assert bm.param_groups[0]["lr"] == pytest.approx(0.05)
    assert bm.state_dict() == bm.optimizer.state_dict()
    file = io.BytesIO()
    torch.save(bm.state_dict(), file)
    file.seek(0)
    saved = torch.load(file)

    twin_model = copy.deepcopy(model)
    twin = BatchManhattan(torch.optim.SGD(twin_model.parameters(), lr=0.1, momentum=0.9))
    twin.load_state_dict(saved)
    assert twin.param_groups[0]["lr"] == pytest.approx(0.05)
    for p, q in zip(model.parameters(), twin_model.parameters(), strict=True):
        assert torch.equal(bm.state[p]["momentum_buffer"], twin.state[q]["momentum_buffer"])
    backward(model, seed=2)
    backward(twin_model, seed=2)
    bm.step()
    twin.step()
    for p, q in zip(model.parameters(), twin_model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_works_with_adam_and_closure():
    model = net()
    bm = BatchManhattan(torch.optim.Adam(model.parameters(), lr=1e-3))

    def closure():
        backward(model)
        return 1.5

    before = [p.detach().clone() for p in model.parameters()]
    assert bm.step(closure) == 1.5
    # Adam's first step moves each parameter by lr * sign(g): with signed gradients too.
    for p, b in zip(model.parameters(), before, strict=True):
        assert torch.allclose(p - b, -1e-3 * torch.sign(p.grad), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"scope": "bias"}, r"scope must be one of \('all', 'weights', 'hidden'\)"),
        ({"sign_of": "momentum"}, r"sign_of must be one of \('gradient', 'update'\)"),
        ({"scope": "weights"}, r"scope='weights' needs the model"),
        ({"scope": "hidden"}, r"scope='hidden' needs the model"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BatchManhattan(torch.optim.SGD(net().parameters(), lr=0.1), **kwargs)

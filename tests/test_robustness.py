"""Attacks (asymbp.robustness): FGSM and PGD against gradients computed by hand and by autograd,
the three attackers, seeding, and the attacked function's normalization."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from asymbp import convert, exact_backprop
from asymbp.config import ConfigError
from asymbp.robustness import (
    PixelModel,
    Target,
    accuracy_under_attack,
    adversarial,
    attacked_subset,
    check,
    input_gradient,
    pixels,
    settings_key,
)

pytest.importorskip("torchattacks", reason="pip install 'asymbp[robustness]'")

COMMON = {"epsilons": [0, 0.05], "attackers": ["exact", "rule"], "subset": None, "seed": 0,
          "batch_size": 64, "transfer_from": None}  # fmt: skip


def attack_cfg(attack: str, **changes):
    own = {"pgd": {"steps": 10, "step_size": 2.5, "random_start": True},
           "apgd": {"steps": 10, "restarts": 1, "rho": 0.75}}.get(attack, {})  # fmt: skip
    return OmegaConf.create({"name": attack, **COMMON, **own, **changes})


SHAPE = (1, 3, 4)  # one-channel 3x4 images: torchattacks' APGD wants N x C x H x W


def pixel_batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *SHAPE, generator=g)
    x[0, 0, 0, :3] = torch.tensor([0.0, 1.0, 0.002])  # at and near the bounds: clipping exercised
    return x, torch.randint(0, 3, (n,), generator=g)


def linear_model(classes=3, seed=0):
    torch.manual_seed(seed)
    mean, std = torch.full((1, *SHAPE), 0.4), torch.full((1, *SHAPE), 0.25)
    return PixelModel(nn.Sequential(nn.Flatten(), nn.Linear(12, classes)), mean, std).eval()


def true_gradient(model: PixelModel, x, y):
    """d mean CE / d pixels of logits = W (x - m) / s + b, by hand: (softmax - onehot) W / s / n."""
    linear, std = model.model[1], model.std.flatten()
    z = ((x - model.mean).flatten(1) / std) @ linear.weight.T + linear.bias
    error = (torch.softmax(z, 1) - nn.functional.one_hot(y, z.shape[1])) / x.shape[0]
    return (error @ linear.weight / std).view_as(x)


def test_fgsm_moves_every_pixel_by_epsilon_along_the_true_gradient_within_0_1():
    model = linear_model()
    x, y = pixel_batch()
    eps = 0.05
    adv = adversarial(model, attack_cfg("fgsm"), eps, x, y)
    expected = (x + eps * true_gradient(model, x, y).sign()).clamp(0, 1)
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-7)
    inside = (x > eps) & (x < 1 - eps)
    torch.testing.assert_close((adv - x).abs()[inside], torch.full_like(x[inside], eps))
    assert adv.min() >= 0 and adv.max() <= 1


def test_pgd_never_leaves_the_epsilon_ball_or_0_1():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 3))
    model = PixelModel(net, torch.zeros(1, *SHAPE), torch.ones(1, *SHAPE)).eval()
    x, y = pixel_batch(n=64)
    for eps in (0.01, 0.1, 0.3):
        adv = adversarial(model, attack_cfg("pgd", steps=15, step_size=4.0), eps, x, y)
        assert (adv - x).abs().max() <= eps + 1e-6
        assert adv.min() >= 0 and adv.max() <= 1
        assert (adv - x).abs().max() > 0.5 * eps  # it did move


def two_layer(rule: str, seed=0):
    """A 12-32-3 ReLU network in pixels, and a copy of it before `convert` (the same W)."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 3))
    plain = copy.deepcopy(net)
    options = {"scale": 1.0} if rule == "usf" else {}
    convert(net, rule, seed=seed, **options)
    mean, std = torch.full((1, *SHAPE), 0.5), torch.full((1, *SHAPE), 0.2)
    return PixelModel(net, mean, std).eval(), PixelModel(plain, mean, std).eval()


@pytest.mark.parametrize("rule", ["usf", "frsf", "rndf", "kp", "dfa"])
def test_the_exact_attacker_follows_autograd_of_the_unconverted_model(rule):
    model, plain = two_layer(rule)
    x, y = pixel_batch()
    with exact_backprop(model):
        exact = input_gradient(model, x, y)
    torch.testing.assert_close(exact, input_gradient(plain, x, y))


def test_under_usf_the_rule_attacker_follows_the_rules_backward_not_the_true_gradient():
    model, plain = two_layer("usf")
    x, y = pixel_batch()
    first, second = model.model[1], model.model[3]
    # By hand: e = (softmax - onehot) / n at the output, sent back through V2 = sign(W2), the
    # ReLU's derivative, then V1 = sign(W1) and the normalization's 1 / std.
    std = model.std.flatten()
    h = ((x - model.mean).flatten(1) / std) @ first.weight.T + first.bias
    z = h.clamp_min(0) @ second.weight.T + second.bias
    e = (torch.softmax(z, 1) - nn.functional.one_hot(y, 3)) / x.shape[0]
    by_hand = (((e @ second.weight.sign()) * (h > 0)) @ first.weight.sign() / std).view_as(x)
    rule = input_gradient(model, x, y)
    torch.testing.assert_close(rule, by_hand)
    exact = input_gradient(plain, x, y)
    cosine = nn.functional.cosine_similarity(rule.flatten(), exact.flatten(), dim=0)
    assert cosine < 0.99  # a different direction, not a rescaled one


def test_fgsm_by_the_rule_attacker_steps_along_the_rules_gradient():
    model, _ = two_layer("usf")
    x, y = pixel_batch()
    target = Target(None, model, x, y)
    expected = (x + 0.05 * input_gradient(model, x, y).sign()).clamp(0, 1)
    assert torch.equal(adversarial(model, attack_cfg("fgsm"), 0.05, x, y), expected)
    with exact_backprop(model):
        exact_adv = adversarial(model, attack_cfg("fgsm"), 0.05, x, y)
    assert not torch.equal(exact_adv, expected)
    # accuracy_under_attack counts the model's answers on those very examples
    correct, n = accuracy_under_attack(target, attack_cfg("fgsm"), "rule", 0.05)
    assert n == len(y) and correct == int((model(expected).argmax(1) == y).sum())


def test_dfa_rule_attacker_uses_the_output_error_through_b():
    model, plain = two_layer("dfa")
    x, y = pixel_batch()
    rule = input_gradient(model, x, y)
    assert rule.abs().sum() > 0
    exact = input_gradient(plain, x, y)
    cosine = nn.functional.cosine_similarity(rule.flatten(), exact.flatten(), dim=0)
    assert cosine < 0.99


def test_epsilon_zero_is_the_clean_accuracy_for_every_attack_and_attacker():
    model, _ = two_layer("usf")
    x, y = pixel_batch(n=40)
    clean = int((model(x).argmax(1) == y).sum())
    for name in ("fgsm", "pgd", "apgd"):
        for attacker in ("exact", "rule", "transfer"):
            target = Target(None, model, x, y)
            assert accuracy_under_attack(target, attack_cfg(name), attacker, 0.0) == (clean, 40)


def test_brsf_rule_attacks_are_reproducible_from_the_seed():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 3))
    convert(net, "brsf", seed=0)
    model = PixelModel(net, torch.zeros(1, *SHAPE), torch.ones(1, *SHAPE)).eval()
    x, y = pixel_batch(n=64)
    target = Target(None, model, x, y)
    cfg = attack_cfg("pgd", batch_size=16)
    first = [accuracy_under_attack(target, cfg, "rule", eps) for eps in (0.05, 0.2)]
    torch.manual_seed(123)  # whatever ran before does not matter
    again = [accuracy_under_attack(target, cfg, "rule", eps) for eps in (0.2, 0.05)][::-1]
    assert first == again


def test_pixels_are_the_runs_scaling_and_features_are_refused():
    images = torch.tensor([[0, 128, 255]], dtype=torch.uint8)
    assert torch.equal(pixels(images), images.float().div_(255.0))
    with pytest.raises(ConfigError, match="image dataset"):
        pixels(torch.zeros(2, 3))


def test_the_subset_is_fixed_by_the_seed_and_sorted():
    labels = torch.arange(100)
    a, b = attacked_subset(labels, 10, 0), attacked_subset(labels, 10, 0)
    assert torch.equal(a, b) and torch.equal(a, a.sort().values) and len(a.unique()) == 10
    assert not torch.equal(a, attacked_subset(labels, 10, 1))
    assert torch.equal(attacked_subset(labels, None, 0), labels)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"name": "cw", "steps": 1}, "not an attack"),
        ({"epsilons": [-0.1]}, "attack.epsilons"),
        ({"epsilons": [0.1, True]}, "attack.epsilons"),
        ({"epsilons": [float("nan")]}, "attack.epsilons"),
        ({"epsilons": []}, "attack.epsilons"),
        ({"attackers": ["exact", "gradient"]}, "attack.attackers"),
        ({"subset": 0}, "attack.subset"),
        ({"subset": "x"}, "attack.subset"),
        ({"steps": 0}, "attack.steps"),
        ({"step_size": -1}, "attack.step_size"),
        ({"random_start": 1}, "attack.random_start"),
        ({"typo": 1}, "attack.typo is not a key"),
        ({"transfer_from": "bp"}, "attack.transfer_from"),
        ({"transfer_from": {}}, "attack.transfer_from"),
    ],
)
def test_bad_attack_values_are_one_config_error(changes, message):
    with pytest.raises(ConfigError, match=message) as error:
        check(attack_cfg("pgd", **changes))
    assert "\n" not in str(error.value)


def test_a_missing_torchattacks_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "torchattacks", None)
    with pytest.raises(ConfigError, match=r"pip install 'asymbp\[robustness\]'"):
        check(attack_cfg("fgsm"))


def test_the_result_key_changes_with_settings_but_not_with_epsilons_or_attackers():
    base = attack_cfg("pgd")
    assert settings_key(base) == settings_key(attack_cfg("pgd", epsilons=[0.3], attackers=["rule"]))
    assert settings_key(base) != settings_key(attack_cfg("pgd", steps=40))
    assert settings_key(base) != settings_key(attack_cfg("pgd", subset=100))

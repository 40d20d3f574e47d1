"""Feedback rules: the V each rule makes, its random state, and its validation."""

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import compose_config
from omegaconf import OmegaConf
from torch import nn

import asymbp
from asymbp.build import RULE_KEYS
from asymbp.feedback import RULES, init_std, make_rule
from asymbp.metrics import sign_concordance


def one_layer(rule, shape=(256, 256), seed=0, **options):
    return asymbp.convert(nn.Sequential(nn.Linear(shape[1], shape[0])), rule, seed=seed, **options)[
        0
    ]


def train_step(model, optimizer, x, y):
    optimizer.zero_grad()
    F.cross_entropy(model(x), y).backward()
    optimizer.step()


def test_the_papers_rules_are_registered_with_bp_first():
    assert {"bp", "usf", "brsf", "frsf", "rndf", "sc"} <= set(RULES)
    assert next(iter(RULES)) == "bp"  # the control leads every table and figure


@pytest.mark.parametrize("name", list(RULES))
def test_every_registered_rule_has_a_config_that_builds_it(name):
    """conf/feedback/<name>.yaml composes, and its options make the rule (as build.py does)."""
    cfg = compose_config(f"feedback={name}")
    options = OmegaConf.to_container(cfg.feedback, resolve=True)
    assert options["name"] == name
    options = {key: value for key, value in options.items() if key not in RULE_KEYS}
    rule = make_rule(name, **options)
    assert type(rule) is RULES[name] and rule.name == name
    assert rule.options() == options


def test_bp_v_is_w():
    layer = one_layer("bp")
    assert torch.equal(layer.feedback_weight(), layer.weight)


def test_usf_is_exactly_sign_w():
    layer = one_layer("usf")
    assert torch.equal(layer.feedback_weight(), torch.sign(layer.weight))
    assert set(layer.feedback_weight().unique().tolist()) == {-1.0, 1.0}


def test_usf_scales():
    layer = one_layer("usf", shape=(30, 50), scale=0.25)
    assert torch.equal(layer.feedback_weight(), 0.25 * torch.sign(layer.weight))
    layer = one_layer("usf", shape=(30, 50), scale="init_std")
    expected = math.sqrt(2.0 / (50 + 30))
    assert init_std(layer.weight) == pytest.approx(expected)
    torch.testing.assert_close(layer.feedback_weight(), expected * torch.sign(layer.weight))


@pytest.mark.parametrize("concordance", [1.0, 0.0, 0.7, 0.25])
def test_sc_fraction_of_concordant_signs(concordance):
    layer = one_layer("sc", concordance=concordance)
    fraction = sign_concordance(layer.feedback_weight(), layer.weight)
    assert fraction == pytest.approx(concordance, abs=0.02)
    if concordance in (0.0, 1.0):
        assert fraction == concordance


def test_sc_concordance_holds_as_w_changes_sign():
    layer = one_layer("sc", shape=(64, 64), concordance=0.7)
    with torch.no_grad():
        layer.weight.neg_()
    assert sign_concordance(layer.feedback_weight(), layer.weight) == pytest.approx(0.7, abs=1e-3)


@pytest.mark.parametrize("rule", ["brsf", "frsf"])
def test_sign_concordant_rules_have_all_signs_right_and_random_magnitudes(rule):
    layer = one_layer(rule)
    v = layer.feedback_weight()
    assert sign_concordance(v, layer.weight) == 1.0
    magnitudes = v.abs()
    assert magnitudes.min() >= 0 and magnitudes.max() <= 1
    assert magnitudes.mean().item() == pytest.approx(0.5, abs=0.01)  # uniform on [0, 1]


def test_half_normal_magnitudes():
    layer = one_layer("frsf", magnitude="half_normal")
    mean = layer.feedback_weight().abs().mean().item()
    assert mean == pytest.approx(math.sqrt(2 / math.pi), abs=0.01)


def test_rndf_has_random_signs():
    layer = one_layer("rndf")
    assert sign_concordance(layer.feedback_weight(), layer.weight) == pytest.approx(0.5, abs=0.02)


def test_brsf_redraws_v_every_training_step(monkeypatch):
    torch.manual_seed(0)
    model = asymbp.convert(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)), "brsf")
    layer = model[2]
    seen = []
    original = layer.feedback_weight

    def recording():
        seen.append(original())
        return seen[-1]

    monkeypatch.setattr(layer, "feedback_weight", recording)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    train_step(model, opt, x, y)
    train_step(model, opt, x, y)
    assert len(seen) == 2
    # New magnitudes (uniform draws differ by 1/3 on average), same signs as the small-step W.
    assert (seen[0].abs() - seen[1].abs()).abs().mean() > 0.2
    assert sign_concordance(seen[0], seen[1]) > 0.95


@pytest.mark.parametrize("rule", ["frsf", "rndf", "sc"])
def test_fixed_state_is_unchanged_by_training_and_restored_from_state_dict(rule):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    options = {"concordance": 0.5} if rule == "sc" else {}
    model = asymbp.convert(net, rule, seed=5, **options)
    state_names = model[0]._feedback_state_names
    assert state_names
    before = {
        k: v.clone() for k, v in model.state_dict().items() if k.split(".")[-1] in state_names
    }
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    for _ in range(3):
        train_step(model, opt, torch.randn(16, 8), torch.randint(0, 3, (16,)))
    after = model.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key], value), key

    fresh = asymbp.convert(
        nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)), rule, seed=6, **options
    )
    assert not torch.equal(fresh.state_dict()[next(iter(before))], next(iter(before.values())))
    fresh.load_state_dict(after)
    for key, value in before.items():
        assert torch.equal(fresh.state_dict()[key], value)
    assert torch.equal(fresh[0].feedback_weight(), model[0].feedback_weight())


@pytest.mark.parametrize("rule", ["frsf", "rndf", "sc"])
def test_same_seed_same_state(rule):
    options = {"concordance": 0.5} if rule == "sc" else {}
    a = one_layer(rule, shape=(10, 10), seed=3, **options)
    b = one_layer(rule, shape=(10, 10), seed=3, **options)
    c = one_layer(rule, shape=(10, 10), seed=4, **options)
    for name in a._feedback_state_names:
        assert torch.equal(getattr(a, name), getattr(b, name))
        assert not torch.equal(getattr(a, name), getattr(c, name))


def test_global_seed_drives_state_when_no_seed_given():
    torch.manual_seed(11)
    a = asymbp.convert(nn.Sequential(nn.Linear(5, 5)), "rndf")[0]
    torch.manual_seed(11)
    b = asymbp.convert(nn.Sequential(nn.Linear(5, 5)), "rndf")[0]
    assert torch.equal(a.feedback_matrix, b.feedback_matrix)


@pytest.mark.parametrize(
    "name, options, match",
    [
        ("nope", {}, r"feedback='nope' is unknown: choose one of bp, usf, brsf"),
        ("usff", {}, r"feedback='usff' is unknown: did you mean usf\?"),
        (
            "sc",
            {"concordance": 1.5},
            r"^feedback.concordance=1.5 is out of range: a number in \[0, 1\]$",
        ),
        ("sc", {"concordance": -0.1}, r"concordance=-0.1 is out of range: a number in \[0, 1\]"),
        (
            "usf",
            {"scale": -1.0},
            r"scale=-1.0 is out of range: a number >= 0 or one of init_std, init_bound",
        ),
        ("usf", {"scale": "big"}, r"scale='big' is out of range: a number >= 0"),
        (
            "frsf",
            {"magnitude": "gaussian"},
            r"magnitude=.* is out of range: one of uniform, half_normal",
        ),
        ("bp", {"scale": 2.0}, r"^feedback=bp has no option scale: its options are none$"),
    ],
)
def test_bad_rules_and_options_raise_value_error(name, options, match):
    with pytest.raises(ValueError, match=match):
        make_rule(name, **options)


# ------------------------------------------------------------- biotorch's draws (scale=init_bound)
# biotorch (jsalbert/biotorch HEAD 74fad0d, biotorch/layers/fa_constructor/{linear,conv}.py) draws
# frSF's and brSF's magnitudes as |xavier_uniform_(W's shape)| and FA's V as xavier_uniform_:
# uniform on [0, b] and on (-b, b), b = sqrt(6 / (fan_in + fan_out)), fans as torch.nn.init
# counts them (conv: channels x kernel positions).
SHAPES = [(120, 400), (10, 84), (6, 1, 5, 5), (16, 6, 5, 5), (64, 32, 3, 3)]


def layer_of_shape(rule, shape, seed=0, **options):
    cls = nn.Linear if len(shape) == 2 else functools.partial(nn.Conv2d, kernel_size=shape[2:])
    module = cls(shape[1], shape[0])
    torch.manual_seed(seed)
    return asymbp.convert(nn.Sequential(module), rule, seed=seed, **options)[0]


def xavier_bound(shape):
    receptive = math.prod(shape[2:])
    return math.sqrt(6.0 / (shape[1] * receptive + shape[0] * receptive))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("rule", ["brsf", "frsf"])
def test_init_bound_magnitudes_are_biotorchs_abs_xavier_uniform(rule, shape):
    layer = layer_of_shape(rule, shape, scale="init_bound")
    v, n, b = layer.feedback_weight(), math.prod(shape), xavier_bound(shape)
    assert sign_concordance(v, layer.weight) == 1.0
    assert v.abs().max().item() <= b * (1 + 1e-6) and v.abs().min().item() >= 0
    # U[0, b]: mean b / 2 (std b / sqrt(12 n)), mean square b^2 / 3 (std b^2 sqrt(4 / (45 n)))
    assert v.abs().mean().item() == pytest.approx(b / 2, abs=4 * b / math.sqrt(12 * n))
    assert v.pow(2).mean().item() == pytest.approx(b**2 / 3, abs=4 * b**2 * math.sqrt(4 / (45 * n)))
    # side by side with torch's xavier_uniform_, which biotorch calls
    generator = torch.Generator().manual_seed(1)
    reference = nn.init.xavier_uniform_(torch.empty(shape), generator=generator)
    assert reference.abs().max().item() <= b
    # each RMS has a relative std of 1.5 sqrt(4 / (45 n)); their difference sqrt(2) x that: 4 std
    assert v.pow(2).mean().sqrt().item() == pytest.approx(
        reference.pow(2).mean().sqrt().item(), rel=9 * math.sqrt(4 / (45 * n))
    )


@pytest.mark.parametrize("shape", SHAPES)
def test_init_bound_rndf_is_biotorchs_xavier_uniform_fa(shape):
    layer = layer_of_shape("rndf", shape, scale="init_bound")
    v, n, b = layer.feedback_weight(), math.prod(shape), xavier_bound(shape)
    assert v.abs().max().item() <= b * (1 + 1e-6)
    # U(-b, b): mean 0 (std b / sqrt(3 n)), root mean square b / sqrt(3), the Xavier std
    assert v.mean().item() == pytest.approx(0.0, abs=4 * b / math.sqrt(3 * n))
    assert v.pow(2).mean().item() == pytest.approx(b**2 / 3, abs=4 * b**2 * math.sqrt(4 / (45 * n)))
    assert b / math.sqrt(3) == pytest.approx(init_std(layer.weight))
    assert sign_concordance(v, layer.weight) == pytest.approx(0.5, abs=4 * 0.5 / math.sqrt(n))


def test_init_std_keeps_todays_draws_sqrt3_below_biotorchs():
    """scale=init_std: magnitudes on [0, sigma], RMS sigma / sqrt(3); init_bound is sqrt(3) x that
    for the same draw (the same seed gives the same M)."""
    shape = (120, 400)
    std, bound = (
        layer_of_shape("frsf", shape, scale="init_std"),
        layer_of_shape("frsf", shape, scale="init_bound"),
    )
    torch.testing.assert_close(bound.feedback_weight(), math.sqrt(3) * std.feedback_weight())
    assert std.feedback_weight().abs().max().item() <= init_std(std.weight) * (1 + 1e-6)


@pytest.mark.parametrize("shape", [(10, 84), (120, 400), (6, 1, 5, 5), (16, 6, 5, 5)])
def test_dfa_biotorch_draw_is_xavier_uniform_of_biotorchs_b_shape(shape):
    """biotorch/layers/dfa/{linear,conv}.py: weight_backward of shape (classes, in_features) or
    (classes, in_channels, kh, kw), xavier_uniform_."""
    classes = 10
    layer = layer_of_shape("dfa", shape, draw="biotorch")
    input_shape = (shape[1],) if len(shape) == 2 else (shape[1], 12, 12)
    b = layer.feedback_rule.direct_feedback(
        layer.feedback_state(), classes, input_shape, tuple(layer.weight.shape)
    )
    expected_shape = (classes, *shape[1:])
    assert tuple(b.shape) == expected_shape
    bound = xavier_bound(expected_shape)
    n = b.numel()
    assert b.abs().max().item() <= bound
    assert b.pow(2).mean().item() == pytest.approx(
        bound**2 / 3, abs=4 * bound**2 * math.sqrt(4 / (45 * n))
    )
    # the default draw: a dense matrix uniform on +-1 / sqrt(D)
    dense = make_rule("dfa").direct_feedback(
        layer.feedback_state(), classes, input_shape, tuple(layer.weight.shape)
    )
    assert tuple(dense.shape) == (classes, math.prod(input_shape))
    assert dense.abs().max().item() <= 1 / math.sqrt(math.prod(input_shape))

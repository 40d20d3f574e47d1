"""Architectures: output shapes, BN placement, the output layer, conversion to asymmetric BP."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from asymbp import asymmetric_layers, convert
from asymbp.models import MODELS, build_model, paper_cnn_stages

NUM_CLASSES = 7
NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)

# (in_channels, image_size) pairs each model is checked on.
SHAPES = {
    "paper_cnn": [(1, 8), (1, 28), (3, 32), (3, 96)],
    "mlp": [(1, 8), (3, 32)],
    "resnet20": [(1, 28), (3, 32)],
    "resnet56": [(3, 32)],
    "resnet18": [(1, 28), (3, 32), (3, 96)],
    "lenet5": [(1, 28), (3, 32)],
    "vit": [(1, 8), (1, 28), (3, 32)],
}
#: Models whose normalization (LayerNorm) is part of the architecture: they refuse batch_norm.
LAYER_NORM_MODELS = {"vit"}
CASES = [
    (name, channels, size, batch_norm)
    for name, shapes in SHAPES.items()
    for channels, size in shapes
    for batch_norm in ((False,) if name in LAYER_NORM_MODELS else (False, True))
]


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]


def build(name, channels, size, batch_norm, **options):
    torch.manual_seed(0)
    return build_model(
        name,
        in_channels=channels,
        image_size=size,
        num_classes=NUM_CLASSES,
        batch_norm=batch_norm,
        **options,
    )


def test_every_registered_model_is_checked():
    assert set(SHAPES) == set(MODELS)


@pytest.mark.parametrize(("name", "channels", "size", "batch_norm"), CASES)
def test_output_shape_norm_layers_and_output_layer(name, channels, size, batch_norm):
    model = build(name, channels, size, batch_norm)
    layers = weight_layers(model)
    norms = [m for m in model.modules() if isinstance(m, NORM_TYPES)]
    if name in LAYER_NORM_MODELS:  # two LayerNorms per block and one before the head
        blocks = [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
        assert len(norms) == 2 * len(blocks) + 1 and all(isinstance(m, nn.LayerNorm) for m in norms)
    else:
        # Every model, the resnets included (their 1x1 projection shortcuts too), has one BN per
        # conv/linear layer except the output layer, and none at all without BN.
        assert len(norms) == (len(layers) - 1 if batch_norm else 0)

    # The last Linear/Conv2d in named_modules order is the one that produces the logits.
    last_name, last = layers[-1]
    assert isinstance(last, nn.Linear) and last.out_features == NUM_CLASSES
    seen = {}
    last.register_forward_hook(lambda module, inputs, output: seen.setdefault("out", output))
    x = torch.randn(3, channels, size, size)
    model.eval()
    with torch.no_grad():
        y = model(x)
    assert y.shape == (3, NUM_CLASSES)
    assert torch.equal(seen["out"], y), f"{last_name} is not the output layer"
    assert torch.isfinite(y).all()


@pytest.mark.parametrize(
    ("size", "stages", "flat_features"),
    [(8, 1, 32 * 4 * 4), (28, 3, 64 * 4 * 4), (32, 3, 64 * 4 * 4), (96, 4, 64 * 6 * 6)],
)
def test_paper_cnn_adapts_its_depth(size, stages, flat_features):
    assert paper_cnn_stages(size) == stages
    model = build("paper_cnn", 3, size, True)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == stages == model.num_stages
    assert [c.out_channels for c in convs] == [32, 64, 64, 64][:stages]
    assert all(c.kernel_size == (5, 5) and c.padding == (2, 2) for c in convs)
    pools = [m for m in model.features if isinstance(m, nn.MaxPool2d | nn.AvgPool2d)]
    assert isinstance(pools[0], nn.MaxPool2d)
    assert all(isinstance(p, nn.AvgPool2d) for p in pools[1:])
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (flat_features, 128),
        (128, NUM_CLASSES),
    ]


def test_paper_cnn_stage_limits_and_options():
    assert [paper_cnn_stages(s) for s in (1, 4, 7, 16, 64, 128, 224)] == [1, 1, 1, 2, 4, 5, 5]
    assert paper_cnn_stages(224, max_stages=3) == 3
    model = build("paper_cnn", 1, 28, False, hidden=32, width=0.5)
    assert [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)] == [16, 32, 32]
    assert model.classifier[1].out_features == 32


def test_mlp_hidden_layers():
    model = build("mlp", 1, 8, True, hidden=[20, 10, 5])
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (64, 20),
        (20, 10),
        (10, 5),
        (5, NUM_CLASSES),
    ]
    assert [m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm1d)] == [20, 10, 5]
    assert len(weight_layers(build("mlp", 1, 8, True, hidden=16))) == 2
    linear = build("mlp", 1, 8, True, hidden=[])
    assert len(weight_layers(linear)) == 1 and not any(
        isinstance(m, nn.BatchNorm1d) for m in linear.modules()
    )


def test_resnet20_layout():
    model = build("resnet20", 3, 32, True)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    # 1 stem + 3 stages x 3 blocks x 2 convs + 2 projection shortcuts.
    assert len(convs) == 21
    assert [c.out_channels for c in convs if c.kernel_size == (1, 1)] == [32, 64]
    assert [c.stride for c in convs if c.kernel_size == (1, 1)] == [(2, 2), (2, 2)]
    assert sum(p.numel() for p in model.parameters()) == 272_279  # ~0.27M, as in He et al.
    assert len(weight_layers(build("resnet56", 3, 32, False))) == 1 + 54 + 2 + 1


def test_resnet18_stem_depends_on_image_size():
    small, large = build("resnet18", 1, 32, True), build("resnet18", 1, 96, True)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, nn.Identity)
    assert large.conv1.kernel_size == (7, 7) and large.conv1.stride == (2, 2)
    assert isinstance(large.maxpool, nn.MaxPool2d)
    assert small.conv1.in_channels == large.conv1.in_channels == 1


def test_lenet5_follows_biotorch():
    model = build("lenet5", 1, 32, False)
    shapes = [tuple(m.weight.shape) for _, m in weight_layers(model)]
    assert shapes == [(6, 1, 5, 5), (16, 6, 5, 5), (120, 16, 5, 5), (84, 120), (NUM_CLASSES, 84)]
    assert weight_layers(build("lenet5", 1, 28, False))[0][1].padding == (2, 2)
    assert weight_layers(model)[0][1].padding == (0, 0)
    tanh = build("lenet5", 1, 28, False, activation="tanh")
    assert sum(isinstance(m, nn.Tanh) for m in tanh.modules()) == 4


def test_lenet5_xavier_init_is_biotorchs():
    # biotorch's init="xavier" (biotorch/layers/fa_constructor: init_parameters): weights
    # Xavier-uniform, bound sqrt(6 / (fan_in + fan_out)), biases zero.
    xavier = weight_layers(build("lenet5", 1, 32, False, init="xavier"))
    default = weight_layers(build("lenet5", 1, 32, False))
    for (_, layer), (_, plain) in zip(xavier, default, strict=True):
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(layer.weight)
        bound = (6.0 / (fan_in + fan_out)) ** 0.5
        assert torch.count_nonzero(layer.bias) == 0 and torch.count_nonzero(plain.bias) > 0
        assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound


@pytest.mark.parametrize(
    ("name", "options", "error", "match"),
    [
        ("nope", {}, ValueError, r"model='nope' is unknown: .*paper_cnn"),
        ("lenet5", {"image_size": 64}, ValueError, "lenet5 takes 28x28 or 32x32 images, got 64x64"),
        ("paper_cnn", {"image_size": 0}, ValueError, "image_size must be >= 1"),
        ("mlp", {"num_classes": 1}, ValueError, "num_classes must be >= 2"),
        ("mlp", {"depth": 3}, ValueError, r"model=mlp has no option depth: its options are hidden"),
        (
            "lenet5",
            {"activation": "gelu"},
            ValueError,
            "model.activation='gelu' is out of range: one of relu, tanh",
        ),
        ("lenet5", {"init": "he"}, ValueError, "init='he' is out of range: one of default, xavier"),
        (
            "mlp",
            {"hidden": [4, 0]},
            ValueError,
            r"hidden=\[4, 0\] is out of range: an integer >= 1 or a list of \(an integer >= 1\)",
        ),
        ("vit", {"batch_norm": True}, ValueError, "vit normalizes with LayerNorm in every block"),
        ("vit", {"patch_size": 5}, ValueError, r"patch_size=5 does not divide .* \(try 2, 4, 7\)"),
        ("vit", {"heads": 3}, ValueError, "heads=3 must divide width=64"),
        ("vit", {"pool": "max"}, ValueError, "pool='max' is out of range: one of cls, mean"),
        ("vit", {"depth": 0}, ValueError, "depth=0 is out of range: an integer >= 1"),
        ("vit", {"mlp_ratio": True}, ValueError, "mlp_ratio=True is out of range: a number > 0"),
    ],
)
def test_bad_arguments_are_clear_errors(name, options, error, match):
    arguments = {"in_channels": 1, "image_size": 28, "num_classes": 10, "batch_norm": False}
    with pytest.raises(error, match=match):
        build_model(name, **{**arguments, **options})


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize(
    ("name", "channels", "size"),
    [
        ("paper_cnn", 1, 28),
        ("mlp", 1, 8),
        ("resnet20", 3, 16),
        ("resnet18", 3, 16),
        ("lenet5", 1, 28),
        ("vit", 1, 28),
    ],
)
def test_usf_conversion_and_backward(name, channels, size, batch_norm):
    if batch_norm and name in LAYER_NORM_MODELS:
        pytest.skip("vit refuses batch_norm (test_bad_arguments_are_clear_errors)")
    model = build(name, channels, size, batch_norm)
    reference = copy.deepcopy(model)
    convert(model, "usf", seed=0)
    asym = asymmetric_layers(model)
    attention = [m for m in reference.modules() if isinstance(m, nn.MultiheadAttention)]
    assert len(asym) == len(weight_layers(reference)) + 3 * len(attention)  # + q, k, v each
    x = torch.randn(4, channels, size, size)
    target = torch.arange(4) % NUM_CLASSES
    for net in (model, reference):
        nn.functional.cross_entropy(net(x), target).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    # The output layer's weight gradient is local (its input x the error at the logits), so uSF
    # and BP agree there; the first layer gets the error through sign(W) and differs.
    ref_grads = dict(reference.named_parameters())
    last_name, first_name = asym[-1][0], asym[0][0]
    assert torch.allclose(grads[f"{last_name}.weight"], ref_grads[f"{last_name}.weight"].grad)
    assert not torch.allclose(grads[f"{first_name}.weight"], ref_grads[f"{first_name}.weight"].grad)


def test_vit_layout_options_and_forward_order():
    model = build("vit", 1, 28, False, patch_size=7, width=32, depth=2, heads=2, pool="mean")
    assert model.class_token is None and model.pos_embed.shape == (1, 16, 32)
    assert model.patch_embed.stride == (7, 7) and len(model.blocks) == 2
    assert model.blocks[0].mlp.fc1.out_features == 64  # mlp_ratio 2.0
    convert(model, "frsf", seed=0, example_input=torch.zeros(2, 1, 28, 28))
    names = [name for name, _ in asymmetric_layers(model)]
    block = [f"blocks.0.attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "out_proj")]
    assert names[:7] == ["patch_embed", *block, "blocks.0.mlp.fc1", "blocks.0.mlp.fc2"]
    assert names[-1] == "head" and len(names) == 1 + 2 * 6 + 1
    cls = build("vit", 3, 32, False)
    assert cls.class_token.shape == (1, 1, 64) and cls.pos_embed.shape == (1, 65, 64)

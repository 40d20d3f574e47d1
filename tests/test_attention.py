"""convert covers attention (packed and separate projections), Conv1d and Conv3d, and names every
weight it leaves with exact backprop: checked by hand, against autograd, and on models asymbp did
not write (torchvision's vit_b_16, nn.Transformer, nn.TransformerEncoderLayer, an LSTM)."""

from __future__ import annotations

import copy
import math
import warnings

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import asymbp
from asymbp.layers import (
    AsymmetricMultiheadAttention,
    UncoveredWeightsWarning,
    exact_backprop,
    uncovered_weights,
    update_feedback,
)
from asymbp.layers import (
    output_layer as output_layer_of,
)
from asymbp.metrics import backward_alignment, weight_alignment
from asymbp.optim import layer_weights

E, HEADS = 16, 2


class AttentionThenLinear(nn.Module):
    """The issue's reproduction: MultiheadAttention(16, 2) -> Linear."""

    def __init__(self, **attention) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(E, HEADS, **attention)
        self.fc = nn.Linear(E, 3)

    def forward(self, x):
        return self.fc(self.attn(x, x, x, need_weights=False)[0]).mean(0)


def grads_of(model: nn.Module, inputs, loss=lambda out: out.square().sum()) -> dict:
    model.zero_grad(set_to_none=True)
    loss(model(*inputs)).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def converted(model: nn.Module, rule: str, example, **options) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("error", UncoveredWeightsWarning)  # these models are covered
        return asymbp.convert(copy.deepcopy(model), rule, seed=0, example_input=example, **options)


def test_the_issues_reproduction_now_reaches_the_attention():
    torch.manual_seed(0)
    model, x = AttentionThenLinear(), torch.randn(5, 4, E)
    exact = grads_of(copy.deepcopy(model), (x,))
    usf = converted(model, "usf", x, last_layer_bp=True)
    names = [name for name, _ in asymbp.asymmetric_layers(usf)]
    assert names == ["attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.out_proj", "fc"]
    grads = grads_of(usf, (x,))
    for key in ("attn.in_proj_weight", "attn.in_proj_bias"):
        assert not torch.allclose(grads[key], exact[key], atol=1e-6)  # the rule reached them
    # out_proj's own W and b gradients are exact here, as they should be: the error reaching its
    # output comes from fc, which last_layer_bp keeps exact; out_proj's V acts upstream of it.
    for key in ("attn.out_proj.weight", "attn.out_proj.bias", "fc.weight"):
        torch.testing.assert_close(grads[key], exact[key])


def test_conversion_shares_the_parameters_and_keeps_their_keys():
    torch.manual_seed(0)
    model = AttentionThenLinear()
    before = dict(model.state_dict())
    params = dict(model.named_parameters())
    asymbp.convert(model, "frsf", seed=0, example_input=torch.zeros(3, 2, E))
    after = model.state_dict()
    assert set(before) <= set(after)  # W's keys unchanged; the rules' state is added
    added = set(after) - set(before)
    assert added and all(k.startswith(("attn.q_proj.", "attn.k_proj.", "attn.v_proj.",
                                       "attn.out_proj.", "fc.")) for k in added)  # fmt: skip
    for name, p in model.named_parameters():
        assert p is params[name]
    assert isinstance(model.attn, AsymmetricMultiheadAttention)


OPTIONS = [
    dict(batch_first=True),
    dict(add_bias_kv=True, add_zero_attn=True),
    dict(kdim=12, vdim=10),  # separate q/k/v_proj_weight
    dict(bias=False),
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o))
@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("masks", ["none", "bool", "float"])
def test_the_asymmetric_path_computes_pytorchs_attention(options, need_weights, masks):
    """Forward values equal nn.MultiheadAttention's, and with V := W the backward pass equals
    autograd's: the projections, heads, masks and softmax are wired as PyTorch wires them."""
    torch.manual_seed(0)
    attention = nn.MultiheadAttention(E, HEADS, **options)
    batch_first = options.get("batch_first", False)
    shape = (2, 5) if batch_first else (5, 2)
    query = torch.randn(*shape, E, requires_grad=True)
    key = torch.randn(*((2, 7) if batch_first else (7, 2)), options.get("kdim", E))
    value = torch.randn(*key.shape[:2], options.get("vdim", E))
    key.requires_grad_(True)
    kwargs = {"need_weights": need_weights}
    if masks == "bool":
        kwargs["key_padding_mask"] = torch.tensor([[False] * 6 + [True], [False] * 7])
        kwargs["attn_mask"] = torch.rand(5, 7) > 0.8
    elif masks == "float":
        kwargs["attn_mask"] = torch.randn(2 * HEADS, 5, 7)
    reference = copy.deepcopy(attention)
    out_ref, weights_ref = reference(query, key, value, **kwargs)
    twin = asymbp.convert(nn.Sequential(attention), "usf", seed=0)[0]
    for projection in twin.projections():  # V := W: the asymmetric path must then be exact
        projection.feedback_weight = lambda p=projection: p.weight.detach()
    out, weights = twin(query, key, value, **kwargs)
    torch.testing.assert_close(out, out_ref, atol=1e-6, rtol=1e-5)
    if need_weights:
        torch.testing.assert_close(weights, weights_ref, atol=1e-6, rtol=1e-5)
    else:
        assert weights is None and weights_ref is None
    error = torch.randn_like(out)
    ours = torch.autograd.grad(out, [query, key, *twin.parameters()], error, allow_unused=True)
    theirs = torch.autograd.grad(
        out_ref, [query, key, *reference.parameters()], error, allow_unused=True
    )
    for a, b in zip(ours, theirs, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_the_attention_backward_by_hand_under_usf():
    """dx = e_q V_q + e_k V_k + e_v V_v, where e_q, e_k, e_v are the exact attention's errors
    for the error e_o V_o that out_proj sends back; dW_q = e_q^T x."""
    torch.manual_seed(0)
    attention = nn.MultiheadAttention(E, HEADS)
    twin = asymbp.convert(nn.Sequential(attention), "usf", seed=0)[0]
    x = torch.randn(5, 2, E, requires_grad=True)
    out, _ = twin(x, x, x, need_weights=False)
    error = torch.randn_like(out)
    out.backward(error)

    v_q, v_k, v_v, v_o = (p.feedback_weight() for p in twin.projections())
    w_in, b_in = twin.in_proj_weight.detach(), twin.in_proj_bias.detach()
    pairs = zip(w_in.chunk(3), b_in.chunk(3), strict=True)
    q, k, v = (F.linear(x.detach(), w, b) for w, b in pairs)
    q, k, v = (t.requires_grad_(True) for t in (q, k, v))

    def core(q, k, v):  # the attention between the projections, exact
        split = [t.reshape(t.shape[0], 2 * HEADS, E // HEADS).transpose(0, 1) for t in (q, k, v)]
        scores = split[0] @ split[1].transpose(1, 2) / math.sqrt(E // HEADS)
        return (scores.softmax(-1) @ split[2]).transpose(0, 1).reshape(5, 2, E)

    attended = core(q, k, v)
    e_attended = error @ v_o  # out_proj's rule
    e_q, e_k, e_v = torch.autograd.grad(attended, (q, k, v), e_attended)
    by_hand = e_q @ v_q + e_k @ v_k + e_v @ v_v
    torch.testing.assert_close(x.grad, by_hand, atol=1e-5, rtol=1e-4)
    flat = x.detach().reshape(-1, E)
    grad_w = torch.cat([e.reshape(-1, E).T @ flat for e in (e_q, e_k, e_v)])
    torch.testing.assert_close(twin.in_proj_weight.grad, grad_w, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(v_q, w_in[:E])  # the feedback is not W


@pytest.mark.parametrize("dims", [1, 3])
def test_conv1d_and_conv3d_send_the_error_through_v(dims):
    torch.manual_seed(0)
    conv = {1: nn.Conv1d, 3: nn.Conv3d}[dims](3, 4, 3, stride=2, padding=1)
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    x = torch.randn(2, 3, *(6,) * dims, requires_grad=True)
    model(x)  # materializes the lazy layer (lazy modules are not converted)
    model[3] = nn.Linear(model[3].in_features, 2)
    asymbp.convert(model, "usf", seed=0, example_input=x.detach())
    layer = model[0]
    out = layer(x)
    error = torch.randn_like(out)
    out.backward(error)
    input_grad = {1: torch.nn.grad.conv1d_input, 3: torch.nn.grad.conv3d_input}[dims]
    by_hand = input_grad(x.shape, layer.feedback_weight(), error, stride=2, padding=1)
    torch.testing.assert_close(x.grad, by_hand, atol=1e-5, rtol=1e-4)
    weight_grad = {1: torch.nn.grad.conv1d_weight, 3: torch.nn.grad.conv3d_weight}[dims]
    expected = weight_grad(x.detach(), layer.weight.shape, error, stride=2, padding=1)
    torch.testing.assert_close(layer.weight.grad, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("layer", [nn.Conv1d(3, 4, 3), nn.Conv3d(3, 4, 3), nn.Linear(6, 5)])
def test_the_mirrors_noise_correlation_is_the_weight_in_every_dimension(layer):
    """E[y x^T] = std^2 W for y = W x: the weight mirror's estimate is W up to sampling noise."""
    torch.manual_seed(0)
    model = asymbp.convert(nn.Sequential(layer), "wm", seed=0)
    twin = model[0]
    x, y = twin.noise_response(4096, 0.5)
    estimate = twin.weight_correlation(x, y) / 0.25
    assert F.cosine_similarity(estimate.flatten(), twin.weight.flatten(), dim=0) > 0.99


def _vit():
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(image_size=32)  # random weights: nothing downloaded
    nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision zeroes it: no error upstream
    return model, torch.randn(2, 3, 32, 32)


def _transformer():
    torch.manual_seed(0)

    class Seq2Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = nn.Transformer(E, HEADS, 1, 1, dim_feedforward=32, dropout=0.0)
            self.head = nn.Linear(E, 3)

        def forward(self, source, target):
            return self.head(self.transformer(source, target))

    return Seq2Seq(), (torch.randn(6, 2, E), torch.randn(4, 2, E))


def _encoder_layer():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(E, HEADS, 32, dropout=0.0, batch_first=True)
    return nn.Sequential(layer, nn.Flatten(), nn.Linear(5 * E, 3)), torch.randn(2, 5, E)


FOREIGN = {
    "vit_b_16": _vit, "nn.Transformer": _transformer, "TransformerEncoderLayer": _encoder_layer
}  # fmt: skip


def foreign(name: str):
    """(model, example input, positional inputs, autograd's gradients of the unconverted model)."""
    model, example = FOREIGN[name]()
    inputs = example if isinstance(example, tuple) else (example,)
    return model, example, inputs, grads_of(copy.deepcopy(model), inputs)


@pytest.mark.parametrize("name", FOREIGN)
def test_foreign_models_bp_is_autograd_to_the_bit(name):
    model, example, inputs, exact = foreign(name)
    bp = converted(model, "bp", example)
    assert any(isinstance(m, AsymmetricMultiheadAttention) for m in bp.modules())
    grads = grads_of(bp, inputs)
    assert set(grads) == set(exact)
    for key, grad in exact.items():
        assert torch.equal(grads[key], grad), key


@pytest.mark.parametrize("name", FOREIGN)
def test_foreign_models_under_usf_every_covered_weight_leaves_backprop(name):
    model, example, inputs, exact = foreign(name)
    usf = converted(model, "usf", example)
    grads = grads_of(usf, inputs)
    output_layer = output_layer_of(usf)[0]
    covered = {id(w) for w in layer_weights(usf)}
    checked = 0
    for key, param in usf.named_parameters():
        if id(param) not in covered or key.startswith(output_layer + ".") or key not in grads:
            continue  # the output layer's W sees the exact output error under any rule
        assert not torch.allclose(grads[key], exact[key], rtol=1e-4, atol=1e-7), key
        checked += 1
    assert checked >= 4
    with exact_backprop(usf):
        again = grads_of(usf, inputs)
    for key, grad in exact.items():  # exact_backprop: the true gradients again, up to rounding
        # (asymbp's attention path against PyTorch's fused one, over ViT-B's 12 blocks)
        assert (again[key] - grad).norm() <= 1e-4 * grad.norm() + 1e-12, key


class Recurrent(nn.Module):
    """An LSTM, a transposed convolution and a bare Parameter used in F.linear, around layers
    convert covers; a class-token-like Parameter that is only concatenated, and a LayerNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.randn(1, 1, 8))
        self.mix = nn.Parameter(torch.randn(8, 8))
        self.lstm = nn.LSTM(8, 8, batch_first=True)
        self.norm = nn.LayerNorm(8)
        self.up = nn.ConvTranspose1d(8, 4, 2, stride=2)
        self.fc = nn.Linear(4 * 12, 3)

    def forward(self, x):
        x = torch.cat([self.token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.norm(F.linear(x, self.mix))
        x = self.lstm(x)[0].transpose(1, 2)
        return self.fc(self.up(x).flatten(1))


LEFT_EXACT = {"": ["mix"], "lstm": ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"],
              "up": ["weight", "bias"]}  # fmt: skip


def test_uncovered_weights_are_named_in_one_warning_and_exactly_those():
    torch.manual_seed(0)
    model, x = Recurrent(), torch.randn(2, 5, 8)
    with pytest.warns(UncoveredWeightsWarning) as caught:
        asymbp.convert(model, "usf", seed=0, example_input=x)
    assert uncovered_weights(model, x) == LEFT_EXACT
    assert len(caught) == 1
    message = str(caught[0].message)
    assert message.splitlines() == [message]
    assert message.startswith("left with exact backprop: the model (mix); lstm (weight_ih_l0, ")
    assert "up (weight, bias)" in message and "token" not in message and "norm" not in message


def test_strict_makes_uncovered_weights_an_error_also_at_the_first_forward():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=r"left with exact backprop: .*\(strict=True\)$"):
        asymbp.convert(Recurrent(), "usf", seed=0, example_input=torch.randn(2, 5, 8), strict=True)
    model = asymbp.convert(Recurrent(), "usf", seed=0, strict=True)  # no example: checked later
    with pytest.raises(ValueError, match="lstm"):
        model(torch.randn(2, 5, 8))


def test_covered_models_convert_silently_even_when_strict():
    for build in FOREIGN.values():
        model, example = build()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            asymbp.convert(model, "usf", seed=0, example_input=example, strict=True)


def test_alignment_metrics_per_projection_in_forward_order():
    torch.manual_seed(0)
    model, example = _encoder_layer()
    asymbp.convert(model, "usf", seed=0, example_input=example)
    layers = list(weight_alignment(model))
    assert layers[:4] == [f"0.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "out_proj")]
    assert layers[4:] == ["0.linear1", "0.linear2", "2"]
    backward = backward_alignment(model, example, torch.tensor([0, 2]))
    assert list(backward) == layers
    for name in layers[:4]:
        cosine = backward[name]["grad_cosine"]
        assert 0 < cosine < 1 and math.isfinite(backward[name]["angle_error"])


def test_kolen_pollack_and_weight_mirror_learn_each_projections_v():
    torch.manual_seed(0)
    model, example = _encoder_layer()
    kp = converted(model, "kp", example)
    attention = kp[0].self_attn
    v_params = [p for proj in attention.projections() for p in proj.feedback_parameters()]
    assert len(v_params) == 4 and all(any(p is q for q in kp.parameters()) for p in v_params)
    grads_of(kp, (example,))
    for projection, v in zip(attention.projections(), v_params, strict=True):
        source, rows = projection.weight_source()
        expected = source.grad if rows is None else source.grad[rows]
        torch.testing.assert_close(v.grad, expected)  # KP: dV = dW, projection by projection
    wm = converted(model, "wm", example)
    projections = wm[0].self_attn.projections()
    before = [F.cosine_similarity(p.feedback_weight().flatten(), p.weight.flatten(), dim=0)
              for p in projections]  # fmt: skip
    for _ in range(20):
        update_feedback(wm)
    after = [F.cosine_similarity(p.feedback_weight().flatten(), p.weight.flatten(), dim=0)
             for p in projections]  # fmt: skip
    assert all(a > b for a, b in zip(after, before, strict=True))


def test_batch_manhattan_weights_scope_signs_the_projections():
    model, example = _encoder_layer()
    model = converted(model, "usf", example)
    ids = {id(p) for p in layer_weights(model)}
    assert id(model[0].self_attn.in_proj_weight) in ids
    assert id(model[0].self_attn.out_proj.weight) in ids
    assert id(model[0].self_attn.in_proj_bias) not in ids


def test_dfa_with_attention_is_one_line_error():
    with pytest.raises(ValueError, match="feedback=dfa needs a chain of layers, but the model "
                       "has attention \\(0.self_attn\\)"):  # fmt: skip
        model, example = _encoder_layer()
        converted(model, "dfa", example)


def test_every_rule_trains_an_encoder_layer():
    """Each local rule runs forward and backward through the attention with finite gradients."""
    for rule in ("usf", "brsf", "frsf", "rndf", "kp", "wm", "sc"):
        model, example = _encoder_layer()
        options = {"concordance": 0.5} if rule == "sc" else {}
        model = converted(model, rule, example, **options)
        grads = grads_of(model, (example,))
        assert all(torch.isfinite(g).all() for g in grads.values()), rule


def test_a_vit_run_records_alignment_per_projection_block_by_block(make_config):
    from asymbp import runs
    from asymbp.train import run

    args = ["dataset=synthetic", "dataset.train_size=256", "dataset.test_size=128", "epochs=2"]
    cfg = make_config(*args, "model=vit", "model.depth=2", "norm=bm", "feedback=frsf")
    metrics = run(cfg)
    assert not metrics["diverged"] and metrics["epochs_completed"] == 2
    columns = list(pd.read_csv(runs.run_directory(cfg) / "history.csv"))
    layers = [c.split("/", 1)[1] for c in columns if c.startswith("angle_error/")]
    block = [f"blocks.0.{p}" for p in
             ("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.out_proj", "mlp.fc1", "mlp.fc2")]
    assert layers[:7] == ["patch_embed", *block] and layers[-1] == "head"  # fmt: skip
    assert len(layers) == 1 + 2 * 6 + 1

"""Alignment metrics of asymmetric layers: how close V is to W (angle, sign concordance, |V|/|W|),
and how close the errors and weight gradients of the asymmetric backward pass are to backprop's."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
from torch import nn

from asymbp.layers import asymmetric_layers, exact_backprop


def angle_degrees(a: torch.Tensor, b: torch.Tensor) -> float:
    """Angle between two tensors seen as flat vectors, in degrees (nan when one of them is zero)."""
    a, b = a.detach().flatten().double(), b.detach().flatten().double()
    norms = a.norm() * b.norm()
    if norms == 0:
        return math.nan
    cosine = torch.clamp(torch.dot(a, b) / norms, -1.0, 1.0)
    return math.degrees(math.acos(cosine.item()))


def sign_concordance(v: torch.Tensor, w: torch.Tensor) -> float:
    """Fraction of entries where sign(V) == sign(W)."""
    return (torch.sign(v) == torch.sign(w)).double().mean().item()


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine of the angle between two tensors seen as flat vectors (nan when one is zero)."""
    a, b = a.detach().flatten().double(), b.detach().flatten().double()
    norms = a.norm() * b.norm()
    return math.nan if norms == 0 else (torch.dot(a, b) / norms).item()


def norm_ratio(v: torch.Tensor, w: torch.Tensor) -> float:
    """|V| / |W| (Frobenius norms); nan when W is zero."""
    w_norm = w.detach().double().norm()
    return math.nan if w_norm == 0 else (v.detach().double().norm() / w_norm).item()


def weight_alignment(model: nn.Module) -> dict[str, dict[str, float]]:
    """Per asymmetric layer with a V (not under DFA): the angle between V and W in degrees, the
    fraction of concordant signs and the norm ratio |V|/|W|.

    brSF's V is a fresh draw, taken without consuming the training random stream."""
    result = {}
    with _rng_untouched(model):
        for name, layer in asymmetric_layers(model):
            v = layer.feedback_weight()
            if v is None:
                continue
            result[name] = {
                "angle_VW": angle_degrees(v, layer.weight),
                "concordance": sign_concordance(v, layer.weight),
                "norm_VW": norm_ratio(v, layer.weight),
            }
    return result


def backward_alignment(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: Callable = nn.functional.cross_entropy,
) -> dict[str, dict[str, float]]:
    """Per asymmetric layer, on one batch, the asymmetric backward pass against exact backprop:
    `angle_error`, the angle in degrees between the errors sent to the layer's input, and
    `grad_cosine`, the cosine between the layer's weight gradients.

    Runs two forward/backward passes on copies of the gradient path only: parameters' `.grad`,
    normalization running statistics and the random stream are left as they were."""
    errors, grads = _backward_at_layers(model, inputs, targets, loss_fn)
    with exact_backprop(model):
        true_errors, true_grads = _backward_at_layers(model, inputs, targets, loss_fn)
    return {
        name: {
            "angle_error": angle_degrees(errors[name], true_errors[name]),
            "grad_cosine": cosine(grads[name], true_grads[name]),
        }
        for name in true_errors
    }


def error_alignment(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: Callable = nn.functional.cross_entropy,
) -> dict[str, float]:
    """Per asymmetric layer: angle in degrees between the error that the asymmetric backward pass
    sends to the layer's input and the error exact backpropagation would send, on one batch."""
    alignment = backward_alignment(model, inputs, targets, loss_fn)
    return {name: values["angle_error"] for name, values in alignment.items()}


def _backward_at_layers(model, inputs, targets, loss_fn):
    """The loss's gradients at every asymmetric layer's input and weight, by layer name."""
    layers = asymmetric_layers(model)
    captured: dict[str, torch.Tensor] = {}

    def capture(name):
        def hook(module, args):
            x = args[0]
            if not x.requires_grad:  # the data entering the first layer
                x = x.detach().requires_grad_(True)
            captured[name] = x
            return (x, *args[1:])

        return hook

    handles = [layer.register_forward_pre_hook(capture(name)) for name, layer in layers]
    try:
        with _rng_untouched(model), _buffers_untouched(model), torch.enable_grad():
            loss = loss_fn(model(inputs), targets)
            names = list(captured)
            # The Parameter holding each W (an attention's packed in_proj_weight: W's rows).
            sources = [dict(layers)[n].weight_source() for n in names]
            weights = [source for source, _ in sources]
            grads = list(
                torch.autograd.grad(loss, [captured[n] for n in names] + weights, allow_unused=True)
            )
            for i, (source, rows) in enumerate(sources, start=len(names)):
                if rows is not None and grads[i] is not None:
                    grads[i], weights[i - len(names)] = grads[i][rows], source[rows]
    finally:
        for handle in handles:
            handle.remove()
    errors = {
        n: g if g is not None else torch.zeros_like(captured[n])
        for n, g in zip(names, grads[: len(names)], strict=True)
    }
    weight_grads = {
        n: g if g is not None else torch.zeros_like(w)
        for n, g, w in zip(names, grads[len(names) :], weights, strict=True)
    }
    return errors, weight_grads


@contextlib.contextmanager
def _rng_untouched(model: nn.Module):
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        yield


@contextlib.contextmanager
def _buffers_untouched(model: nn.Module):
    """Restores every buffer (e.g. BatchNorm running statistics) after the block."""
    saved = {name: b.clone() for name, b in model.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(saved[name])

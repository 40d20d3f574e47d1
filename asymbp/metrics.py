"""Alignment metrics of asymmetric layers: how close V is to W, and its error to the true one."""

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


def weight_alignment(model: nn.Module) -> dict[str, dict[str, float]]:
    """Per asymmetric layer: angle between V and W in degrees, and the fraction of concordant signs.

    brSF's V is a fresh draw, taken without consuming the training random stream."""
    result = {}
    with _rng_untouched(model):
        for name, layer in asymmetric_layers(model):
            v = layer.feedback_weight()
            result[name] = {
                "angle_VW": angle_degrees(v, layer.weight),
                "concordance": sign_concordance(v, layer.weight),
            }
    return result


def error_alignment(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: Callable = nn.functional.cross_entropy,
) -> dict[str, float]:
    """Per asymmetric layer: angle in degrees between the error that the asymmetric backward pass
    sends to the layer's input and the error exact backpropagation would send, on one batch.

    Runs two forward/backward passes on copies of the gradient path only: parameters' `.grad`,
    normalization running statistics and the random stream are left as they were."""
    asymmetric_errors = _errors_at_layer_inputs(model, inputs, targets, loss_fn)
    with exact_backprop(model):
        true_errors = _errors_at_layer_inputs(model, inputs, targets, loss_fn)
    return {name: angle_degrees(asymmetric_errors[name], true_errors[name]) for name in true_errors}


def _errors_at_layer_inputs(model, inputs, targets, loss_fn) -> dict[str, torch.Tensor]:
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
            grads = torch.autograd.grad(loss, [captured[n] for n in names], allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    return {
        n: g if g is not None else torch.zeros_like(captured[n])
        for n, g in zip(names, grads, strict=True)
    }


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

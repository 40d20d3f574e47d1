"""Asymmetric Linear and Conv2d layers and `convert`, which puts them into any model.

The forward pass is PyTorch's own. In the backward pass the error sent to the layer's input goes
through the feedback weights V, while the weight and bias gradients stay the true local ones
(error arriving at the layer x its input).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin

from asymbp.feedback import FeedbackRule, make_rule


class AsymmetricLinearFunction(torch.autograd.Function):
    """y = x W^T + b; backward: dx = dy V, dW = dy^T x, db = sum dy."""

    @staticmethod
    def forward(ctx, x, weight, bias, feedback_weight):
        ctx.save_for_backward(x, feedback_weight)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        x, feedback_weight = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_out @ feedback_weight.to(grad_out.dtype)
        if ctx.needs_input_grad[1]:
            grad_weight = grad_out.reshape(-1, grad_out.shape[-1]).mT @ x.reshape(
                -1, x.shape[-1]
            ).to(grad_out.dtype)
        if ctx.needs_input_grad[2]:
            grad_bias = grad_out.reshape(-1, grad_out.shape[-1]).sum(0)
        return grad_x, grad_weight, grad_bias, None


class AsymmetricConv2dFunction(torch.autograd.Function):
    """2-d convolution whose input gradient is a transposed convolution with V.

    One `convolution_backward` call gives all three gradients: handed V in place of W, its input
    gradient uses V, while its weight and bias gradients never read the weight's values."""

    @staticmethod
    def forward(ctx, x, weight, bias, feedback_weight, stride, padding, dilation, groups):
        ctx.save_for_backward(x, feedback_weight)
        ctx.conv_args = (stride, padding, dilation, groups)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad_out):
        x, feedback_weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv_args
        needs = ctx.needs_input_grad
        grad_x, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad_out,
            x.to(grad_out.dtype),
            feedback_weight.to(grad_out.dtype),
            [feedback_weight.shape[0]] if ctx.has_bias else None,
            stride,
            padding,
            dilation,
            False,
            [0, 0],
            groups,
            [needs[0], needs[1], ctx.has_bias and needs[2]],
        )
        return grad_x, grad_weight, grad_bias, None, None, None, None, None


class AsymmetricLayer:
    """Mixin of the asymmetric twins: holds the rule and registers its random state as buffers."""

    feedback_rule: FeedbackRule
    #: While True (see `exact_backprop`) the layer back-propagates exactly, through W.
    exact: bool

    def _setup_feedback(self, rule: FeedbackRule, generator: torch.Generator) -> None:
        self.feedback_rule = rule
        self.exact = False
        self._feedback_state_names = []
        for name, value in rule.make_state(self.weight, generator).items():
            self.register_buffer(name, value.to(self.weight.device, self.weight.dtype))
            self._feedback_state_names.append(name)

    def feedback_state(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in self._feedback_state_names}

    def feedback_weight(self) -> torch.Tensor:
        """V for the current W (a fresh draw for brSF)."""
        with torch.no_grad():
            return self.feedback_rule.feedback_weight(self.weight, self.feedback_state())

    def _uses_autograd(self) -> bool:
        # Native autograd is exact for BP and costs nothing where no backward pass follows.
        return self.exact or self.feedback_rule.is_exact or not torch.is_grad_enabled()

    def extra_repr(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.feedback_rule.options().items())
        return f"{super().extra_repr()}, feedback={self.feedback_rule.name}" + (
            f"({options})" if options else ""
        )


class AsymmetricLinear(AsymmetricLayer, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._uses_autograd():
            return F.linear(x, self.weight, self.bias)
        return AsymmetricLinearFunction.apply(x, self.weight, self.bias, self.feedback_weight())


class AsymmetricConv2d(AsymmetricLayer, nn.Conv2d):
    def _explicit_padding(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """The input padded where nn.Conv2d would pad it itself, and the symmetric zero padding
        left for the convolution: convolution_backward takes numbers only."""
        if self.padding_mode != "zeros":
            return F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode), (0, 0)
        if self.padding == "valid":
            return x, (0, 0)
        if self.padding == "same":
            totals = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size, strict=True)]
            if all(t % 2 == 0 for t in totals):
                return x, tuple(t // 2 for t in totals)
            # Odd total padding: PyTorch pads the extra pixel on the bottom/right.
            pads = []
            for t in reversed(totals):
                pads += [t // 2, t - t // 2]
            return F.pad(x, pads), (0, 0)
        return x, tuple(self.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._uses_autograd():
            return self._conv_forward(x, self.weight, self.bias)
        x, padding = self._explicit_padding(x)
        return AsymmetricConv2dFunction.apply(
            x,
            self.weight,
            self.bias,
            self.feedback_weight(),
            list(self.stride),
            list(padding),
            list(self.dilation),
            self.groups,
        )


def _twin(module: nn.Module, rule: FeedbackRule, generator: torch.Generator) -> nn.Module:
    """The asymmetric twin of a Linear/Conv2d, sharing its very Parameter objects."""
    if isinstance(module, nn.Linear):
        twin = AsymmetricLinear(
            module.in_features, module.out_features, bias=module.bias is not None, device="meta"
        )
    else:
        twin = AsymmetricConv2d(
            module.in_channels,
            module.out_channels,
            module.kernel_size,
            stride=module.stride,
            padding=module.padding,
            dilation=module.dilation,
            groups=module.groups,
            bias=module.bias is not None,
            padding_mode=module.padding_mode,
            device="meta",
        )
    twin.weight = module.weight
    twin.bias = module.bias
    twin.train(module.training)
    twin._setup_feedback(rule, generator)
    return twin


def convertible_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every nn.Linear and nn.Conv2d, in `named_modules` order."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear | nn.Conv2d) and not isinstance(module, LazyModuleMixin)
    ]


def asymmetric_layers(model: nn.Module) -> list[tuple[str, AsymmetricLayer]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, AsymmetricLayer)]


def convert(
    model: nn.Module,
    feedback: str | FeedbackRule = "bp",
    *,
    last_layer_bp: bool = False,
    seed: int | None = None,
    **options,
) -> nn.Module:
    """Replace, in place, every nn.Linear and nn.Conv2d of `model` by its asymmetric twin.

    feedback: a rule name of `asymbp.feedback.RULES` (or a rule object); options go to the rule.
    last_layer_bp: keep exact backpropagation in the last layer (the output layer in all of
        asymbp's models), as Xiao et al. (2018) do. Off by default: the paper's choice is unknown.
    seed: seeds the layers' fixed random state; None draws it from torch's global generator.
    Normalization, pooling and activations are left alone. Returns `model`.
    """
    rule = make_rule(feedback, **options)
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    generator = torch.Generator().manual_seed(seed)
    layers = convertible_layers(model)
    if layers and layers[0][0] == "":
        raise ValueError(
            "convert() replaces layers inside a model, not the model itself; wrap the layer, "
            "e.g. nn.Sequential(layer)"
        )
    for index, (name, module) in enumerate(layers):
        layer_rule = make_rule("bp") if last_layer_bp and index == len(layers) - 1 else rule
        twin = _twin(module, layer_rule, generator)
        parent_name, _, child_name = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child_name, twin)
    return model


@contextlib.contextmanager
def exact_backprop(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block every asymmetric layer back-propagates through W (true gradients)."""
    layers = [m for _, m in asymmetric_layers(model)]
    previous = [m.exact for m in layers]
    for m in layers:
        m.exact = True
    try:
        yield model
    finally:
        for m, was in zip(layers, previous, strict=True):
            m.exact = was

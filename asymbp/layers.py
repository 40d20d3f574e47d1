"""Asymmetric Linear, Conv1d/2d/3d and multi-head attention layers, and `convert`, which puts
them into any model.

The forward pass is PyTorch's own. In the backward pass the error sent to the layer's input goes
through the feedback weights V, while the weight and bias gradients stay the true local ones
(error arriving at the layer x its input). Where V is a Parameter (Kolen-Pollack), it receives the
weight gradient too. Under a global-error rule (DFA) the input error is e B instead, e being the
error at the model's output, captured by `GlobalError`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
import warnings
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin

from asymbp.feedback import FeedbackRule, make_rule

#: Added to convert's seed for the feedback state's generator (any constant != 0 does).
FEEDBACK_SEED_OFFSET = 0x5EED_FEED
#: Output positions per side of a convolutional weight mirror's noise response (ours).
MIRROR_SIDE = 4
#: direct_error(input_shape, grad_out) -> the error a global-error layer sends to its input
#: (grad_out, the error arriving at the layer, gives the dtype and the output's positions).
DirectError = Callable[[torch.Size, torch.Tensor], torch.Tensor]


class AsymmetricLinearFunction(torch.autograd.Function):
    """y = x W^T + b; backward: dx = dy V (or direct_error), dW = dy^T x, db = sum dy, and dV = dW
    where V requires a gradient (Kolen-Pollack)."""

    @staticmethod
    def forward(ctx, x, weight, bias, feedback_weight, direct_error: DirectError | None = None):
        ctx.save_for_backward(x, feedback_weight)
        ctx.direct_error = direct_error
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        x, feedback_weight = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grad_x = grad_weight = grad_bias = None
        if needs[0]:
            if ctx.direct_error is not None:
                grad_x = ctx.direct_error(x.shape, grad_out)
            else:
                grad_x = grad_out @ feedback_weight.to(grad_out.dtype)
        if needs[1] or needs[3]:
            grad_weight = grad_out.reshape(-1, grad_out.shape[-1]).mT @ x.reshape(
                -1, x.shape[-1]
            ).to(grad_out.dtype)
        if needs[2]:
            grad_bias = grad_out.reshape(-1, grad_out.shape[-1]).sum(0)
        return (
            grad_x,
            grad_weight if needs[1] else None,
            grad_bias,
            grad_weight if needs[3] else None,
            None,
        )


#: F.conv1d, F.conv2d, F.conv3d and the matching input gradients, by number of spatial dims.
CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONV_INPUT = {
    1: torch.nn.grad.conv1d_input, 2: torch.nn.grad.conv2d_input, 3: torch.nn.grad.conv3d_input
}  # fmt: skip


class AsymmetricConvFunction(torch.autograd.Function):
    """1-, 2- or 3-d convolution whose input gradient is a transposed convolution with V.

    One `convolution_backward` call gives all three gradients: handed V in place of W, its input
    gradient uses V, while its weight and bias gradients never read the weight's values. Where V
    requires a gradient (Kolen-Pollack) it gets the weight gradient; under a global-error rule
    (feedback_weight None) the input gradient is direct_error's."""

    @staticmethod
    def forward(
        ctx, x, weight, bias, feedback_weight, stride, padding, dilation, groups,
        direct_error: DirectError | None = None,
    ):  # fmt: skip
        ctx.save_for_backward(x, weight if feedback_weight is None else feedback_weight)
        ctx.conv_args = (stride, padding, dilation, groups)
        ctx.has_bias = bias is not None
        ctx.direct_error = direct_error
        return CONV[len(stride)](x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad_out):
        x, feedback_weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv_args
        needs = ctx.needs_input_grad
        direct = ctx.direct_error is not None
        grad_x, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad_out,
            x.to(grad_out.dtype),
            feedback_weight.to(grad_out.dtype),
            [feedback_weight.shape[0]] if ctx.has_bias else None,
            stride,
            padding,
            dilation,
            False,
            [0] * len(stride),
            groups,
            [needs[0] and not direct, needs[1] or needs[3], ctx.has_bias and needs[2]],
        )
        if needs[0] and direct:
            grad_x = ctx.direct_error(x.shape, grad_out)
        return (
            grad_x,
            grad_weight if needs[1] else None,
            grad_bias,
            grad_weight if needs[3] else None,
            *(None,) * 5,
        )


#: The 2-d name of earlier versions.
AsymmetricConv2dFunction = AsymmetricConvFunction


class GlobalError:
    """Forward hook on a model under a global-error rule: keeps e = dL/d(output) of the latest
    backward pass, which reaches the output before any layer's backward runs."""

    def __init__(self) -> None:
        self.error: torch.Tensor | None = None

    def _keep(self, grad: torch.Tensor) -> None:
        self.error = grad

    def __call__(self, module, args, output) -> None:
        if isinstance(output, torch.Tensor) and output.requires_grad:
            output.register_hook(self._keep)


class AsymmetricLayer:
    """Mixin of the asymmetric twins: holds the rule and registers its random state as buffers."""

    feedback_rule: FeedbackRule
    #: While True (see `exact_backprop`) the layer back-propagates exactly, through W.
    exact: bool

    #: The model's output error under a global-error rule (set by `convert`), else None.
    global_error: GlobalError | None = None

    def _setup_feedback(self, rule: FeedbackRule, generator: torch.Generator) -> None:
        self.feedback_rule = rule
        self.exact = False
        self._feedback_state_names = []
        self._direct_cache: tuple[tuple, torch.Tensor] | None = None
        for name, value in rule.make_state(self.weight, generator).items():
            value = value.to(self.weight.device)
            if value.is_floating_point():
                value = value.to(self.weight.dtype)
            if rule.trains_with_optimizer:
                self.register_parameter(name, nn.Parameter(value))
            else:
                self.register_buffer(name, value)
            self._feedback_state_names.append(name)

    def feedback_state(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in self._feedback_state_names}

    def weight_source(self) -> tuple[torch.Tensor, slice | None]:
        """The tensor a gradient of W is taken with respect to, and W's rows in it (None: all):
        the layer's weight Parameter, or a projection's packed `in_proj_weight`."""
        return self.weight, None

    def feedback_parameters(self) -> list[nn.Parameter]:
        """The learned V that the optimizer trains alongside W (Kolen-Pollack), else []."""
        if not self.feedback_rule.trains_with_optimizer:
            return []
        return list(self.feedback_state().values())

    def feedback_weight(self) -> torch.Tensor | None:
        """V for the current W (a fresh draw for brSF); None under a global-error rule."""
        with torch.no_grad():
            return self.feedback_rule.feedback_weight(self.weight, self.feedback_state())

    def _direct_error(self, conv_args: tuple | None = None) -> DirectError | None:
        if not self.feedback_rule.routes_global_error:
            return None
        return lambda shape, grad_out: self.direct_input_error(shape, grad_out, conv_args)

    def direct_input_error(
        self, input_shape: torch.Size, grad_out: torch.Tensor, conv_args: tuple | None = None
    ) -> torch.Tensor:
        """e B: the model's output error e (batch x classes, or batch x any output shape,
        flattened) through this layer's fixed B. A 2-D B (classes x the input's values) is a
        matrix product; a 4-D B (classes x in_channels x kernel, DFA's draw=biotorch on a conv
        layer) is biotorch's convolutional DFA: e copied to every output position of the layer,
        then sent back by the layer's transposed convolution (conv_args: stride, padding,
        dilation, groups) with kernel B."""
        dtype = grad_out.dtype
        error = None if self.global_error is None else self.global_error.error
        if error is None or error.dim() < 2 or error.shape[0] != input_shape[0]:
            raise RuntimeError(
                f"feedback={self.feedback_rule.name} needs the error at the model's output "
                "(batch first): compute the loss from the output of the converted model itself"
            )
        error = error.flatten(1)
        key = (error.shape[1], tuple(input_shape[1:]), error.device, dtype)
        if self._direct_cache is None or self._direct_cache[0] != key:
            b = self.feedback_rule.direct_feedback(
                self.feedback_state(), key[0], key[1], tuple(self.weight.shape)
            )
            self._direct_cache = (key, b.to(error.device, dtype))
        b = self._direct_cache[1]
        if b.dim() == 2:
            return (error.to(dtype) @ b).view(input_shape)
        stride, padding, dilation, groups = conv_args
        if groups != 1:
            raise RuntimeError(
                f"feedback={self.feedback_rule.name} with a convolutional B needs groups=1 "
                f"(the layer has groups={groups}): use the rule's default draw"
            )
        dims = len(stride)
        spread = error.to(dtype)[(..., *(None,) * dims)].expand(-1, -1, *grad_out.shape[2:])
        return CONV_INPUT[dims](list(input_shape), b, spread, stride, padding, dilation, groups)

    def _uses_autograd(self) -> bool:
        # Native autograd is exact for BP and costs nothing where no backward pass follows.
        return self.exact or self.feedback_rule.is_exact or not torch.is_grad_enabled()

    def extra_repr(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.feedback_rule.options().items())
        return f"{super().extra_repr()}, feedback={self.feedback_rule.name}" + (
            f"({options})" if options else ""
        )


class _LinearMap:
    """What a linear map y = x W^T (+ b) gives the weight mirror: noise responses and their
    correlation with the noise."""

    weight: torch.Tensor

    def _linear(self, x: torch.Tensor) -> torch.Tensor:
        if self._uses_autograd():
            return F.linear(x, self.weight, self.bias)
        return AsymmetricLinearFunction.apply(
            x, self.weight, self.bias, self.feedback_weight(), self._direct_error()
        )

    def noise_response(self, n: int, std: float) -> tuple[torch.Tensor, torch.Tensor]:
        """n zero-mean Gaussian inputs x (std `std`) and y = W x, without bias."""
        weight = self.weight
        x = torch.randn(n, weight.shape[1], device=weight.device, dtype=weight.dtype)
        x.mul_(std)
        return x, F.linear(x, weight)

    @staticmethod
    def weight_correlation(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """mean over samples of y x^T, shaped like W."""
        return y.mT @ x / x.shape[0]


class AsymmetricLinear(_LinearMap, AsymmetricLayer, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._linear(x)


class _AsymmetricConv(AsymmetricLayer):
    """The asymmetric twin of nn.Conv1d, nn.Conv2d or nn.Conv3d (mixed into each)."""

    def _explicit_padding(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """The input padded where the nn.ConvNd would pad it itself, and the symmetric zero
        padding left for the convolution: convolution_backward takes numbers only."""
        zeros = (0,) * len(self.kernel_size)
        if self.padding_mode != "zeros":
            return F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode), zeros
        if self.padding == "valid":
            return x, zeros
        if self.padding == "same":
            totals = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size, strict=True)]
            if all(t % 2 == 0 for t in totals):
                return x, tuple(t // 2 for t in totals)
            # Odd total padding: PyTorch pads the extra pixel on the bottom/right.
            pads = []
            for t in reversed(totals):
                pads += [t // 2, t - t // 2]
            return F.pad(x, pads), zeros
        return x, tuple(self.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._uses_autograd():
            return self._conv_forward(x, self.weight, self.bias)
        x, padding = self._explicit_padding(x)
        conv_args = (list(self.stride), list(padding), list(self.dilation), self.groups)
        return AsymmetricConvFunction.apply(
            x, self.weight, self.bias, self.feedback_weight(), *conv_args,
            self._direct_error(conv_args),
        )  # fmt: skip

    def noise_response(self, n: int, std: float) -> tuple[torch.Tensor, torch.Tensor]:
        """n zero-mean Gaussian inputs x (std `std`) and y = conv(x, W) without bias or padding.

        x is just large enough for MIRROR_SIDE output positions along each dimension, so that
        every kernel tap sees the same number of noise values (no padding biases the
        correlation)."""
        side = [
            d * (k - 1) + 1 + s * (MIRROR_SIDE - 1)
            for d, k, s in zip(self.dilation, self.kernel_size, self.stride, strict=True)
        ]
        x = torch.randn(
            n, self.in_channels, *side, device=self.weight.device, dtype=self.weight.dtype
        ).mul_(std)
        conv = CONV[len(side)]
        return x, conv(x, self.weight, None, self.stride, 0, self.dilation, self.groups)

    def weight_correlation(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The convolutional y x^T: the weight gradient of conv(x, .) for output gradient y,
        averaged over samples and output positions."""
        dims = len(self.kernel_size)
        _, correlation, _ = torch.ops.aten.convolution_backward(
            y, x, self.weight, None, list(self.stride), [0] * dims, list(self.dilation), False,
            [0] * dims, self.groups, [False, True, False],
        )  # fmt: skip
        return correlation / (y.shape[0] * math.prod(y.shape[2:]))


class AsymmetricConv1d(_AsymmetricConv, nn.Conv1d):
    pass


class AsymmetricConv2d(_AsymmetricConv, nn.Conv2d):
    pass


class AsymmetricConv3d(_AsymmetricConv, nn.Conv3d):
    pass


#: The convolutions `convert` covers and their twins (subclasses of these are covered too).
CONV_TWINS = {nn.Conv1d: AsymmetricConv1d, nn.Conv2d: AsymmetricConv2d, nn.Conv3d: AsymmetricConv3d}


class AsymmetricProjection(_LinearMap, AsymmetricLayer, nn.Module):
    """One input projection (query, key or value) of a converted nn.MultiheadAttention: the
    linear map x W^T + b whose W and b are the attention's own Parameters, or rows of its packed
    `in_proj_weight` and `in_proj_bias`. It holds only its rule's state, so the attention's
    state_dict keeps PyTorch's keys for W and b; the weight mirror and the alignment metrics see
    it as a linear layer of its own."""

    def __init__(self, owner: nn.MultiheadAttention, weight: str, rows: slice | None, bias_rows):
        super().__init__()
        object.__setattr__(self, "_owner", owner)  # not a child module: no cycle in modules()
        self.weight_name, self.rows, self.bias_rows = weight, rows, bias_rows

    @property
    def weight(self) -> torch.Tensor:
        weight = getattr(self._owner, self.weight_name)
        return weight if self.rows is None else weight[self.rows]

    @property
    def bias(self) -> torch.Tensor | None:
        bias = self._owner.in_proj_bias
        return None if bias is None else bias[self.bias_rows]

    def weight_source(self) -> tuple[nn.Parameter, slice | None]:
        return getattr(self._owner, self.weight_name), self.rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._linear(x)

    def extra_repr(self) -> str:
        where = self.weight_name
        if self.rows is not None:
            where += f"[{self.rows.start}:{self.rows.stop}]"
        options = ", ".join(f"{k}={v!r}" for k, v in self.feedback_rule.options().items())
        return f"{where}, feedback={self.feedback_rule.name}" + (f"({options})" if options else "")


def _additive_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A boolean attention mask (True: not attended) as the float mask PyTorch adds."""
    if mask is None or mask.is_floating_point():
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, -math.inf)


class AsymmetricMultiheadAttention(nn.MultiheadAttention):
    """nn.MultiheadAttention whose four projections go through feedback rules: the query, key
    and value projections (`q_proj`, `k_proj`, `v_proj`, AsymmetricProjection) and `out_proj`
    (an AsymmetricLinear). The attention itself (scaling, softmax, the products with the keys
    and values) back-propagates exactly, as normalization and pooling do. When every projection
    back-propagates exactly (bp, `exact_backprop`, no gradients) PyTorch's own forward runs."""

    q_proj: AsymmetricProjection
    k_proj: AsymmetricProjection
    v_proj: AsymmetricProjection

    def projections(self) -> list[AsymmetricLayer]:
        return [self.q_proj, self.k_proj, self.v_proj, self.out_proj]

    def forward(
        self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
        average_attn_weights=True, is_causal=False,
    ):  # fmt: skip
        exact = all(p.feedback_rule.is_exact for p in self.projections())
        if exact or not torch.is_grad_enabled():  # PyTorch's own path (its fused kernels)
            return super().forward(
                query, key, value, key_padding_mask=key_padding_mask, need_weights=need_weights,
                attn_mask=attn_mask, average_attn_weights=average_attn_weights,
                is_causal=is_causal,
            )  # fmt: skip
        batched = query.dim() == 3
        if not batched:  # (L, E): one sequence
            query, key, value = (t.unsqueeze(1) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif self.batch_first:  # (N, L, E) -> (L, N, E)
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        tgt_len, bsz, embed = query.shape
        heads, head_dim = self.num_heads, self.head_dim
        q, k, v = self.q_proj(query), self.k_proj(key), self.v_proj(value)
        if is_causal and attn_mask is None:
            raise RuntimeError("Need attn_mask if specifying the is_causal hint.")
        attn_mask = _additive_mask(attn_mask, q.dtype)
        key_padding_mask = _additive_mask(key_padding_mask, q.dtype)
        if self.bias_k is not None:
            k = torch.cat([k, self.bias_k.repeat(1, bsz, 1)])
            v = torch.cat([v, self.bias_v.repeat(1, bsz, 1)])
            attn_mask = None if attn_mask is None else F.pad(attn_mask, (0, 1))
            key_padding_mask = None if key_padding_mask is None else F.pad(key_padding_mask, (0, 1))
        q = q.reshape(tgt_len, bsz * heads, head_dim).transpose(0, 1)
        k = k.reshape(k.shape[0], bsz * heads, head_dim).transpose(0, 1)
        v = v.reshape(v.shape[0], bsz * heads, head_dim).transpose(0, 1)
        if self.add_zero_attn:
            zeros = k.new_zeros(bsz * heads, 1, head_dim)
            k, v = torch.cat([k, zeros], dim=1), torch.cat([v, zeros], dim=1)
            attn_mask = None if attn_mask is None else F.pad(attn_mask, (0, 1))
            key_padding_mask = None if key_padding_mask is None else F.pad(key_padding_mask, (0, 1))
        src_len = k.shape[1]
        mask = attn_mask
        if mask is not None and mask.dim() == 2:
            mask = mask.unsqueeze(0)
        if key_padding_mask is not None:
            padding = key_padding_mask.view(bsz, 1, 1, src_len).expand(-1, heads, -1, -1)
            padding = padding.reshape(bsz * heads, 1, src_len)
            mask = padding if mask is None else mask + padding
        dropout = self.dropout if self.training else 0.0
        if need_weights:
            scores = torch.bmm(q * math.sqrt(1.0 / head_dim), k.transpose(-2, -1))
            weights = torch.softmax(scores if mask is None else scores + mask, dim=-1)
            attended = torch.bmm(F.dropout(weights, dropout) if dropout > 0 else weights, v)
        else:
            if mask is not None:
                mask = mask.reshape(bsz, heads, -1, src_len) if mask.shape[0] > 1 else mask
            attended = F.scaled_dot_product_attention(
                q.view(bsz, heads, tgt_len, head_dim), k.view(bsz, heads, src_len, head_dim),
                v.view(bsz, heads, src_len, head_dim), mask, dropout,
            ).view(bsz * heads, tgt_len, head_dim)  # fmt: skip
            weights = None
        attended = attended.transpose(0, 1).reshape(tgt_len * bsz, embed)
        output = self.out_proj(attended).view(tgt_len, bsz, -1)
        if weights is not None:
            weights = weights.view(bsz, heads, tgt_len, src_len)
            weights = weights.mean(dim=1) if average_attn_weights else weights
        if not batched:
            output = output.squeeze(1)
            weights = None if weights is None else weights.squeeze(0)
        elif self.batch_first:
            output = output.transpose(0, 1)
        return output, weights


def _twin(module: nn.Module, rule: FeedbackRule, generator: torch.Generator) -> nn.Module:
    """The asymmetric twin of a Linear or ConvNd, sharing its very Parameter objects."""
    if isinstance(module, nn.Linear):
        twin = AsymmetricLinear(
            module.in_features, module.out_features, bias=module.bias is not None, device="meta"
        )
    else:
        cls = next(twin for base, twin in CONV_TWINS.items() if isinstance(module, base))
        twin = cls(
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


def _attention_twin(
    module: nn.MultiheadAttention, rules: dict[str, FeedbackRule], generator: torch.Generator
) -> nn.MultiheadAttention:
    """`module` made an AsymmetricMultiheadAttention in place (its class changes; its Parameters,
    buffers and hooks stay) with a projection for each of query, key and value, each with its
    rule (`rules` by projection name: q_proj, k_proj, v_proj)."""
    module.__class__ = AsymmetricMultiheadAttention
    embed = module.embed_dim
    for index, name in enumerate(("q", "k", "v")):
        rows = slice(index * embed, (index + 1) * embed)
        if module._qkv_same_embed_dim:
            projection = AsymmetricProjection(module, "in_proj_weight", rows, rows)
        else:
            projection = AsymmetricProjection(module, f"{name}_proj_weight", None, rows)
        projection.train(module.training)
        projection._setup_feedback(rules[f"{name}_proj"], generator)
        setattr(module, f"{name}_proj", projection)
    return module


#: The modules `convert` makes asymmetric (subclasses included; lazy modules excluded).
COVERED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MultiheadAttention)
#: Modules whose parameters back-propagate exactly by design, as in the paper: normalization
#: (its affine scale is part of the normalization, like BN's) and embeddings (their input is
#: indices: no error is sent back through their weights).
EXACT_BY_DESIGN = (
    nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
    nn.Embedding, nn.EmbeddingBag, *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)  # fmt: skip


def convertible_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every module `convert` covers (COVERED), in `named_modules` order:
    an attention's out_proj follows the attention."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, COVERED) and not isinstance(module, LazyModuleMixin)
    ]


#: Attributes `convert` sets on a model: the output layer's name (None until it is known) and the
#: convertible layers' names in the order the forward pass first calls them.
OUTPUT_LAYER = "asymbp_output_layer"
FORWARD_ORDER = "asymbp_forward_order"


def _tensors(value) -> list[torch.Tensor]:
    """The tensors in a model's output (a tensor, or tuples, lists and dicts of them)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list | tuple):
        return [t for item in value for t in _tensors(item)]
    return []


def _exact_forward(model: nn.Module, example_input) -> list[torch.Tensor]:
    """The output tensors of one forward pass of `example_input` (a tensor or a tuple of
    positional inputs) in eval mode with exact gradients: no BN statistic changes and no feedback
    is drawn. The modules' modes are restored."""
    modes = {module: module.training for module in model.modules()}
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    try:
        model.eval()
        with torch.enable_grad(), exact_backprop(model):
            return _tensors(model(*inputs))
    finally:
        for module, training in modes.items():
            module.training = training


def trace_layers(model: nn.Module, example_input) -> tuple[list[str], list[str]]:
    """(output layers, forward order) from one forward pass of `example_input` (a tensor or a
    tuple of positional inputs): the convertible layers whose output reaches the model's output
    without passing through another convertible layer, found by walking the autograd graph back
    from the output, and every convertible layer in the order the pass first calls it. The pass
    runs in eval mode (no BN statistics change) with exact gradients (no feedback is drawn), and
    the model's modes are restored."""
    names = {id(module): name for name, module in convertible_layers(model)}
    produced: dict[torch.autograd.graph.Node, str] = {}
    order: list[str] = []

    def record(module, args, output):
        name = names[id(module)]
        if name not in order:
            order.append(name)
        if isinstance(output, torch.Tensor) and output.grad_fn is not None:
            produced[output.grad_fn] = name

    handles = [m.register_forward_hook(record) for _, m in convertible_layers(model)]
    try:
        outputs = _exact_forward(model, example_input)
    finally:
        for handle in handles:
            handle.remove()
    found, seen = [], set()
    stack = [t.grad_fn for t in outputs if t.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node in produced:
            if produced[node] not in found:
                found.append(produced[node])
            continue
        stack.extend(next_node for next_node, _ in node.next_functions)
    return sorted(found, key=order.index), order


#: Autograd nodes that only move or copy their input: a parameter passing through them is
#: consumed by the node after them.
_PASS_THROUGH = (
    "View", "Reshape", "UnsafeView", "Expand", "Permute", "Transpose", "TBackward", "Unsqueeze",
    "Squeeze", "Slice", "Select", "Split", "Unbind", "Clone", "ToCopy", "AsStrided", "Alias",
)  # fmt: skip
#: Nodes whose gradient with respect to their other inputs does not read a parameter's values:
#: a parameter consumed only by these (a class token, a positional embedding) transports nothing.
_ADDITIVE = ("AddBackward", "SubBackward", "CatBackward", "StackBackward", "NegBackward")


def _covered_parameters(model: nn.Module) -> set[int]:
    """ids of the parameters that a feedback rule or the exact-by-design rule accounts for."""
    covered = set()
    for module in model.modules():
        if isinstance(module, (AsymmetricLayer, nn.MultiheadAttention, *EXACT_BY_DESIGN)):
            covered |= {id(p) for p in module.parameters(recurse=False)}
    return covered


def uncovered_weights(model: nn.Module, example_input) -> dict[str, list[str]]:
    """The parameters that one forward pass of `example_input` uses as weights on the backward
    path (their values enter the error sent to other inputs: matrix products, convolutions,
    recurrences, element-wise products) but that no feedback rule covers, by module name: these
    back-propagate exactly. Found by walking the autograd graph; normalization and embeddings
    (EXACT_BY_DESIGN) and parameters that are only added or concatenated are not weights."""
    names = {id(p): name for name, p in model.named_parameters()}
    covered = _covered_parameters(model)
    outputs = _exact_forward(model, example_input)
    consumers: dict[torch.autograd.graph.Node, list] = {}
    seen, stack = set(), [t.grad_fn for t in outputs if t.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        for child, _ in node.next_functions:
            if child is not None:
                consumers.setdefault(child, []).append(node)
                stack.append(child)

    def used_as_weight(node, depth: int = 0) -> bool:
        for consumer in consumers.get(node, []):
            kind = type(consumer).__name__
            if kind.startswith(_PASS_THROUGH) and depth < 32:
                if used_as_weight(consumer, depth + 1):
                    return True
            elif not kind.startswith(_ADDITIVE):
                return True
        return False

    found: dict[str, list[str]] = {}
    for node in consumers:
        parameter = getattr(node, "variable", None)  # an AccumulateGrad node: a leaf
        if parameter is None or id(parameter) not in names or id(parameter) in covered:
            continue
        if used_as_weight(node):
            module, _, leaf = names[id(parameter)].rpartition(".")
            found.setdefault(module, []).append(leaf)
    order = list(names.values())
    return {
        module: sorted(leaves, key=lambda leaf: order.index(f"{module}.{leaf}".lstrip(".")))
        for module, leaves in sorted(found.items(), key=lambda item: order.index(
            f"{item[0]}.{item[1][0]}".lstrip(".")))
    }  # fmt: skip


def _describe(uncovered: dict[str, list[str]]) -> str:
    return "; ".join(
        f"{module or 'the model'} ({', '.join(leaves)})" for module, leaves in uncovered.items()
    )


def _report_uncovered(model: nn.Module, example_input, strict: bool) -> None:
    """Name in one warning (strict: a ValueError) the weights no feedback rule covers."""
    uncovered = uncovered_weights(model, example_input)
    if not uncovered:
        return
    message = (
        f"left with exact backprop: {_describe(uncovered)}: asymbp.convert covers "
        "Linear, Conv1d/2d/3d and MultiheadAttention"
    )
    if strict:
        raise ValueError(message + " (strict=True)")
    warnings.warn(message, UncoveredWeightsWarning, stacklevel=3)


class UncoveredWeightsWarning(UserWarning):
    """Some weights of a converted model back-propagate exactly (`uncovered_weights`)."""


def output_layer(model: nn.Module) -> tuple[str, nn.Module]:
    """(name, module) of the model's output layer, as `convert` found it from the forward pass
    (or was told with `output_layer=`). ValueError (one line, naming the fix) when it is not known
    yet or not unique."""
    name = getattr(model, OUTPUT_LAYER, None)
    if name is None:
        raise ValueError(
            "the model's output layer is not known (not traced yet, or its output comes from "
            "several layers or none): convert it with asymbp.convert(model, rule, "
            "example_input=x) or output_layer=NAME"
        )
    return name, model.get_submodule(name)


def _output_layer_name(model: nn.Module, found: list[str], explicit: str | None) -> str:
    """The one output layer: the explicit name (checked) or the only one found."""
    layers = [name for name, _ in convertible_layers(model)]
    if explicit is not None:
        if explicit not in layers:
            raise ValueError(
                f"output_layer={explicit!r} is not a layer convert covers (Linear, ConvNd, "
                f"attention); its layers are {layers}"
            )
        return explicit
    if len(found) == 1:
        return found[0]
    what = (
        f"{len(found)} layers ({', '.join(found)})"
        if found
        else "no covered layer (the output is not computed by one)"
    )
    raise ValueError(
        f"the model's output comes from {what}: name the output layer with output_layer=NAME "
        f"(one of {layers})"
    )


#: An attention's projections in the order of the alignment metrics' columns.
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")


def asymmetric_layers(model: nn.Module) -> list[tuple[str, AsymmetricLayer]]:
    """(name, layer) of every asymmetric layer, in forward order once `convert` has seen a forward
    pass (layers it never called last), else in `named_modules` order."""
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, AsymmetricLayer)]
    order = getattr(model, FORWARD_ORDER, None)
    if order:
        rank = {name: i for i, name in enumerate(order)}

        def key(item: tuple[str, nn.Module]) -> tuple[int, int]:
            parent, _, leaf = item[0].rpartition(".")
            attention = leaf in PROJECTIONS and parent in rank  # q, k, v, then out
            if attention and isinstance(model.get_submodule(parent), nn.MultiheadAttention):
                return rank[parent], PROJECTIONS.index(leaf)
            return rank.get(item[0], len(rank)), 0

        layers.sort(key=key)
    return layers


def convert(
    model: nn.Module,
    feedback: str | FeedbackRule = "bp",
    *,
    last_layer_bp: bool = False,
    seed: int | None = None,
    example_input=None,
    output_layer: str | None = None,
    strict: bool = False,
    modules: Sequence[tuple[str, str | FeedbackRule]] = (),
    **options,
) -> nn.Module:
    """Replace, in place, every nn.Linear, nn.Conv1d, nn.Conv2d and nn.Conv3d of `model` by its
    asymmetric twin, and make every nn.MultiheadAttention asymmetric in its query, key, value and
    output projections (packed `in_proj_weight` or separate `q/k/v_proj_weight`), sharing the very
    Parameter objects, so that checkpoints, optimizers and state_dict keys for W stay valid.

    feedback: a rule name of `asymbp.feedback.RULES` (or a rule object); options go to the rule.
    modules: rules chosen per layer: (pattern, rule name or object) pairs, matched in order
        against each layer's name with fnmatch (`*` matches anything, dots included; an
        attention's projections are `<attention>.q_proj`, `k_proj`, `v_proj`, `out_proj`); the
        first match wins and unmatched layers take `feedback`. A pattern that matches no layer is
        a ValueError (a typo would otherwise change nothing).
    last_layer_bp: keep exact backpropagation in the output layer, as Xiao et al. (2018) do: the
        pair (output layer, "bp") placed before `modules`. Off by
        default: the paper's choice is unknown. The output layer is the one that produces the
        model's output, found from a forward pass (`trace_layers`), not from registration order:
        on `example_input` when given, else on the model's first input (before that batch's
        layers run).
    output_layer: the output layer's name, for models whose output several layers (or none)
        produce: then a ValueError says so and asks for it.
    seed: seeds the layers' fixed random state; None draws it from torch's global generator.
    strict: any other weight on the backward path (an RNN's, a transposed convolution's, a bare
        Parameter in an F.* call; `uncovered_weights`) is a ValueError instead of an
        UncoveredWeightsWarning that names them ("left with exact backprop: ..."). Checked on
        `example_input` when given, else at the first forward pass.
    Normalization, pooling, activations and the attention's softmax are left alone (exact).
    Returns `model`.
    """
    rule = make_rule(feedback, **options)
    chosen = [(pattern, make_rule(choice)) for pattern, choice in modules]
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    # Offset so that seed s never replays torch.manual_seed(s)'s stream, which initialized W: with
    # the same stream the first layer's uniform draws would be W's own (kp and wm's V0 = W0).
    generator = torch.Generator().manual_seed(seed + FEEDBACK_SEED_OFFSET)
    layers = convertible_layers(model)
    if layers and layers[0][0] == "":
        raise ValueError(
            "convert() replaces layers inside a model, not the model itself; wrap the layer, "
            "e.g. nn.Sequential(layer)"
        )
    setattr(model, OUTPUT_LAYER, None)
    setattr(model, FORWARD_ORDER, None)
    exact_name = None
    if example_input is not None or output_layer is not None:
        found, order = [], None
        if example_input is not None:
            found, order = trace_layers(model, example_input)
        setattr(model, FORWARD_ORDER, order)
        try:
            exact_name = _output_layer_name(model, found, output_layer)
        except ValueError:
            if last_layer_bp or output_layer is not None:
                raise  # only what asks for "the" output layer needs a single one
        setattr(model, OUTPUT_LAYER, exact_name)
    names = _layer_names(layers)
    for index, (pattern, _) in enumerate(chosen):
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            raise ValueError(
                f"modules[{index}]: {pattern!r} matches no layer; the layers are {names}"
            )

    def rule_for(name: str) -> FeedbackRule:
        if last_layer_bp and name == exact_name:
            return make_rule("bp")
        return next((r for pattern, r in chosen if fnmatch.fnmatchcase(name, pattern)), rule)

    global_rules = {rule_for(name) for name in names if rule_for(name).routes_global_error}
    for global_rule in global_rules:
        _check_chain(model, global_rule)
    for name, module in layers:
        if isinstance(module, nn.MultiheadAttention):
            rules = {p: rule_for(f"{name}.{p}") for p in PROJECTIONS[:3]}
            twin = _attention_twin(module, rules, generator)
        else:
            twin = _twin(module, rule_for(name), generator)
        parent_name, _, child_name = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child_name, twin)
    if example_input is not None:
        _report_uncovered(model, example_input, strict)
    if example_input is None and output_layer is None:
        # Found at the first forward, from its own input, before any layer computes.
        hook = _FindAtFirstForward(last_layer_bp, strict=strict, report=True)
        model.register_forward_pre_hook(hook, with_kwargs=True)
    elif example_input is None:  # output layer given: only the uncovered weights are left
        hook = _FindAtFirstForward(last_layer_bp, strict=strict, report=True, trace=False)
        model.register_forward_pre_hook(hook, with_kwargs=True)
    global_layers = [
        layer for _, layer in asymmetric_layers(model) if layer.feedback_rule.routes_global_error
    ]
    if global_layers:
        global_error = GlobalError()
        model.register_forward_hook(global_error)
        for layer in global_layers:
            layer.global_error = global_error
    return model


def _layer_names(layers: list[tuple[str, nn.Module]]) -> list[str]:
    """The names a rule can be chosen for: each layer's, an attention's q/k/v projections'."""
    names = []
    for name, module in layers:
        attention = isinstance(module, nn.MultiheadAttention)
        names += [f"{name}.{p}" for p in PROJECTIONS[:3]] if attention else [name]
    return names


class _FindAtFirstForward:
    """Forward pre-hook of a converted model whose output layer was not given: at the first
    forward, trace the layers on that input, record the output layer and forward order and,
    under last_layer_bp, give the output layer exact backprop (dropping the rule's state, as if
    convert had made it a bp layer); a model with several output layers raises then."""

    def __init__(
        self, last_layer_bp: bool, *, strict: bool = False, report: bool = True, trace: bool = True
    ) -> None:
        self.last_layer_bp = last_layer_bp
        self.strict, self.report, self.trace = strict, report, trace
        self.tracing = False

    def __call__(self, model, args, kwargs):
        if self.tracing or kwargs:
            return None
        if self.report:
            self.report = False
            self.tracing = True
            try:
                _report_uncovered(model, args, self.strict)
            finally:
                self.tracing = False
        if not self.trace or getattr(model, FORWARD_ORDER, None) is not None:
            return None
        self.tracing = True
        try:
            found, order = trace_layers(model, args)
        finally:
            self.tracing = False
        setattr(model, FORWARD_ORDER, order)
        if len(found) != 1 and not self.last_layer_bp:
            return None
        name = _output_layer_name(model, found, None)
        setattr(model, OUTPUT_LAYER, name)
        if self.last_layer_bp:
            layer = model.get_submodule(name)
            for state in layer._feedback_state_names:
                delattr(layer, state)
            layer._setup_feedback(make_rule("bp"), torch.Generator())
            layer.global_error = None
        return None


#: torchvision's blocks with a shortcut around layers (module, class names: matched by name, so
#: the layer core imports no model zoo); a module of one's own says it with the class attribute
#: `asymbp_residual = True` (asymbp.models.BasicBlock does).
TORCHVISION_RESIDUAL = ("torchvision.models.resnet", ("BasicBlock", "Bottleneck"))


def _is_residual(module: nn.Module) -> bool:
    if getattr(module, "asymbp_residual", False):
        return True
    cls = type(module)
    return cls.__module__ == TORCHVISION_RESIDUAL[0] and cls.__name__ in TORCHVISION_RESIDUAL[1]


def _check_chain(model: nn.Module, rule: FeedbackRule) -> None:
    """A global-error rule needs every layer's output to reach the logits through the next layer
    only: residual blocks, whose shortcut bypasses layers, cannot take it."""
    attention = [name for name, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    if attention:
        raise ValueError(
            f"feedback={rule.name} needs a chain of layers, but the model has attention "
            f"({attention[0]}), which mixes positions and (in Transformers) sits in residual "
            "blocks: use a local rule (usf, brsf, frsf, rndf, kp, wm)"
        )
    residual = [type(m).__name__ for m in model.modules() if _is_residual(m)]
    if residual:
        raise ValueError(
            f"feedback={rule.name} needs a chain of layers, but the model has residual blocks "
            f"({residual[0]}): use a sequential model (mlp, paper_cnn, lenet5)"
        )


def update_feedback(model: nn.Module) -> None:
    """Let every layer whose rule learns V between steps (weight mirror) update it, W frozen."""
    with torch.no_grad():
        for _, layer in asymmetric_layers(model):
            if layer.feedback_rule.updates_between_steps:
                layer.feedback_rule.update_state(layer)


def update_feedback_after_steps(model: nn.Module, optimizer: torch.optim.Optimizer):
    """Call `update_feedback(model)` after every `optimizer.step()`; returns the hook's handle.
    Nothing is registered when no layer of `model` updates its feedback between steps."""
    if not any(m.feedback_rule.updates_between_steps for _, m in asymmetric_layers(model)):
        return None
    return optimizer.register_step_post_hook(lambda *_: update_feedback(model))


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

"""Feedback rules: how the backward weights V are made from the forward weights W, or (DFA) where
each layer's error comes from instead.

Each rule is one small frozen dataclass; its fields are its options. There are three kinds, and a
rule says which it is with class attributes; the layers (asymbp/layers.py) do the rest.

1. Local rules with fixed or redrawn V (bp, usf, brsf, frsf, rndf, sc): `make_state` draws the
   layer's random state once (registered as buffers on the layer, so it is saved, moved and restored
   with the model); `feedback_weight(W, state)` builds V from the current W and that state at every
   training step. The layer sends grad_out V to its input.

2. Local rules with learned V (kp, wm): `make_state` returns V's random start under the name
   `backward_weight` (plus any counters), and `feedback_weight` returns that tensor. The state lives
   on the layer like any other, so checkpoints, resume and `.to(device)` carry it. V is learned in
   one of two ways:
   - `trains_with_optimizer = True` (kp): the state is registered as nn.Parameters, and the layer's
     backward gives V exactly the gradient W receives. An optimizer built from `model.parameters()`
     (after `convert`) then applies to V the same weight decay, momentum, Adam moments and Batch
     Manhattan sign as to W, with W's parameter group.
   - `update_state(layer)` (wm): called for every layer after each optimizer step (see
     `asymbp.layers.update_feedback_after_steps`), with W frozen; it may use the layer's
     `noise_response` / `weight_correlation` to probe W without touching the data.

3. Global-error rules (dfa): `routes_global_error = True`. The error e at the model's output (the
   logits) is captured once per backward pass; a layer sends e B to its input, B being the fixed
   random matrix returned by `direct_feedback(state, classes, input_shape)`. The layer's own weight
   gradient is still its local one (grad_out x input). `feedback_weight` returns None (there is no
   V shaped like W). Only chains of layers (no residual blocks) can take such a rule.

`name_options` lists the options that change what is computed and so belong in a run's name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import ClassVar, Literal

import torch

from asymbp.registry import (
    Count,
    Fraction,
    NonNegative,
    Positive,
    PositiveInt,
    Rate,
    Registry,
    check_values,
    declarations,
)

MAGNITUDES = ("uniform", "half_normal")
#: Scales named after the layer's Xavier initialization (sigma = sqrt(2 / (fan_in + fan_out))):
#: init_std multiplies V by sigma (biotorch's uSF: sigma * sign(W)); init_bound by Xavier-uniform's
#: bound sqrt(3) sigma, so that uniform magnitudes are |Xavier-uniform| draws, U[0, sqrt(3) sigma]
#: (biotorch's brSF and frSF), and rndf's V is Xavier-uniform, U(-sqrt(3) sigma, sqrt(3) sigma)
#: (biotorch's FA; jsalbert/biotorch HEAD 74fad0d, biotorch/layers/fa_constructor/*.py).
NAMED_SCALES = ("init_std", "init_bound")


def _draw_magnitude(shape, distribution: str, generator=None, device=None, dtype=None):
    """Non-negative magnitudes M: uniform on [0, 1] or half-normal |N(0, 1)|."""
    if distribution == "uniform":
        return torch.rand(shape, generator=generator, device=device, dtype=dtype)
    return torch.randn(shape, generator=generator, device=device, dtype=dtype).abs_()


def init_std(weight: torch.Tensor) -> float:
    """Xavier-normal std sqrt(2 / (fan_in + fan_out)): the scale biotorch gives sign(W) in uSF."""
    fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(weight)
    return math.sqrt(2.0 / (fan_in + fan_out))


@dataclass(frozen=True)
class FeedbackRule:
    """Base class of the rules."""

    name: ClassVar[str]
    #: True when V is redrawn at every training mini-batch (brSF).
    redraws_every_batch: ClassVar[bool] = False
    #: True when V is W itself: the layer can use PyTorch's own autograd.
    is_exact: ClassVar[bool] = False
    #: True when the state is V itself, registered as Parameters and given W's gradient (kp).
    trains_with_optimizer: ClassVar[bool] = False
    #: True when `update_state` changes the state between training steps (wm).
    updates_between_steps: ClassVar[bool] = False
    #: True when each layer receives the output error through a fixed matrix (dfa).
    routes_global_error: ClassVar[bool] = False
    #: The options that change what is computed, named in the run directory (runs.run_id).
    name_options: ClassVar[tuple[str, ...]] = ()

    def make_state(
        self, weight: torch.Tensor, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """The layer's fixed random state, drawn once on the CPU (same values on every device)."""
        return {}

    def feedback_weight(
        self, weight: torch.Tensor, state: dict[str, torch.Tensor]
    ) -> torch.Tensor | None:
        raise NotImplementedError

    def update_state(self, layer) -> None:
        """Learned feedback: change the layer's state after an optimizer step (W frozen)."""

    def direct_feedback(
        self,
        state: dict[str, torch.Tensor],
        classes: int,
        input_shape: tuple[int, ...],
        weight_shape: tuple[int, ...] | None = None,
    ) -> torch.Tensor:
        """Global-error rules: the fixed B on the CPU, either a matrix (classes x
        prod(input_shape)) or, for a conv layer of weight shape (out, in, kh, kw), a kernel
        (classes x in x kh x kw) that the layer applies as a transposed convolution."""
        raise NotImplementedError

    def __post_init__(self):
        """Each option checked against its annotation (type and registry.Range), as a config's."""
        check_values("feedback", self.options(), declarations(type(self)))

    def options(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


#: Every rule by name, in the order of tables and figures: backprop, the paper's sign-concordant
#: rules and random feedback, then the rules that learn V (kp, wm) and direct feedback alignment;
#: a plugin's rules follow.
RULES: Registry[type[FeedbackRule]] = Registry("feedback")


def register_rule(rule: type[FeedbackRule]) -> type[FeedbackRule]:
    """Class decorator: make a FeedbackRule subclass (a frozen dataclass whose fields are its
    options) the choice `feedback=<rule.name>`; plugins use it for their own rules."""
    if not (isinstance(rule, type) and issubclass(rule, FeedbackRule)):
        raise TypeError(f"register_rule takes a FeedbackRule subclass, got {rule!r}")
    if not isinstance(getattr(rule, "name", None), str):
        raise TypeError(f"{rule.__qualname__} needs a class attribute name: ClassVar[str]")
    return RULES.register(rule.name, rule)


@dataclass(frozen=True)
class ScaledRule(FeedbackRule):
    """A rule whose V is multiplied by `scale`: 1.0 keeps the paper's magnitudes; 'init_std' is
    biotorch's and Xiao et al.'s scaling of uSF by the initialization std; 'init_bound' by
    Xavier-uniform's bound, biotorch's draw for brsf, frsf and rndf (see NAMED_SCALES)."""

    scale: NonNegative | Literal[NAMED_SCALES] = 1.0

    def _scaled(self, v: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if self.scale == "init_std":
            factor = init_std(weight)
        elif self.scale == "init_bound":
            factor = math.sqrt(3.0) * init_std(weight)
        else:
            factor = float(self.scale)
        return v if factor == 1.0 else v.mul_(factor)


@dataclass(frozen=True)
class RandomMagnitudeRule(ScaledRule):
    """A rule whose V has random non-negative magnitudes M drawn from `magnitude`."""

    magnitude: Literal[MAGNITUDES] = "uniform"


@register_rule
@dataclass(frozen=True)
class BP(FeedbackRule):
    """Backpropagation, the control: V = W."""

    name: ClassVar[str] = "bp"
    is_exact: ClassVar[bool] = True

    def feedback_weight(self, weight, state):
        return weight.detach()


@register_rule
@dataclass(frozen=True)
class USF(ScaledRule):
    """Uniform sign-concordant feedback: V = sign(W) (times `scale`)."""

    name: ClassVar[str] = "usf"

    def feedback_weight(self, weight, state):
        return self._scaled(torch.sign(weight.detach()), weight)


@register_rule
@dataclass(frozen=True)
class BRSF(RandomMagnitudeRule):
    """Batchwise random-magnitude sign-concordant feedback: V = M * sign(W), M new every batch."""

    name: ClassVar[str] = "brsf"
    redraws_every_batch: ClassVar[bool] = True

    def feedback_weight(self, weight, state):
        w = weight.detach()
        m = _draw_magnitude(w.shape, self.magnitude, device=w.device, dtype=w.dtype)
        return self._scaled(m.mul_(torch.sign(w)), weight)


@register_rule
@dataclass(frozen=True)
class FRSF(RandomMagnitudeRule):
    """Fixed random-magnitude sign-concordant feedback: V = M * sign(W), M drawn once."""

    name: ClassVar[str] = "frsf"

    def make_state(self, weight, generator):
        return {"feedback_magnitude": _draw_magnitude(weight.shape, self.magnitude, generator)}

    def feedback_weight(self, weight, state):
        v = torch.sign(weight.detach()).mul_(state["feedback_magnitude"])
        return self._scaled(v, weight)


@register_rule
@dataclass(frozen=True)
class RNDF(RandomMagnitudeRule):
    """Random feedback (Lillicrap et al.'s feedback alignment): fixed V = M * R, R = +-1."""

    name: ClassVar[str] = "rndf"

    def make_state(self, weight, generator):
        m = _draw_magnitude(weight.shape, self.magnitude, generator)
        signs = torch.randint(0, 2, weight.shape, generator=generator).mul_(2).sub_(1)
        return {"feedback_matrix": m.mul_(signs)}

    def feedback_weight(self, weight, state):
        return self._scaled(state["feedback_matrix"].clone(), weight)


@register_rule
@dataclass(frozen=True)
class SC(RandomMagnitudeRule):
    """Partial sign concordance: V = M * sign(W) * S with S = +-1 fixed and exactly
    round(concordance * n) of the n entries of S equal to +1."""

    name: ClassVar[str] = "sc"
    name_options: ClassVar[tuple[str, ...]] = ("concordance",)

    concordance: Fraction = 1.0

    def make_state(self, weight, generator):
        n = weight.numel()
        flip = torch.randperm(n, generator=generator)[round(self.concordance * n) :]
        signs = torch.ones(n)
        signs[flip] = -1.0
        return {
            "feedback_magnitude": _draw_magnitude(weight.shape, self.magnitude, generator),
            "feedback_sign": signs.view(weight.shape),
        }

    def feedback_weight(self, weight, state):
        v = (
            torch.sign(weight.detach())
            .mul_(state["feedback_magnitude"])
            .mul_(state["feedback_sign"])
        )
        return self._scaled(v, weight)


def _random_like_init(weight: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random start for a learned V: uniform, zero mean, with the std of W's initialization."""
    bound = math.sqrt(3.0) * weight.detach().float().std().item() if weight.numel() > 1 else 0.0
    return torch.rand(weight.shape, generator=generator).mul_(2 * bound).sub_(bound)


@register_rule
@dataclass(frozen=True)
class KP(FeedbackRule):
    """Kolen-Pollack (Kolen & Pollack 1994; Akrout et al. 2019): V starts at its own random value
    and receives exactly W's update (gradient, weight decay, optimizer, Batch Manhattan sign), so
    V - W shrinks by the weight-decay factor at every step."""

    name: ClassVar[str] = "kp"
    trains_with_optimizer: ClassVar[bool] = True

    def make_state(self, weight, generator):
        return {"backward_weight": _random_like_init(weight, generator)}

    def feedback_weight(self, weight, state):
        return state["backward_weight"]


@register_rule
@dataclass(frozen=True)
class WM(FeedbackRule):
    """Weight mirror (Akrout et al. 2019): after every `every`-th optimizer step, `steps` times,
    zero-mean Gaussian noise x (std `noise_std`, `batch` samples) enters the layer, y = W x without
    bias, and V <- V + lr * mean(y x^T) - weight_decay * V. As E[y x^T] = noise_std^2 W, V tends to
    c W with c = lr * noise_std^2 / weight_decay, averaging ~1 / weight_decay noise batches.

    At its first update (after the first training step, which V0 serves), V is first mirrored
    `warmup_steps` times from its random start V0 with the same rule on the schedule
    lr_k = (lr / weight_decay) / k, weight_decay_k = 1 / k (k = 1, 2, ...): the running mean of
    k mirror estimates, so V starts at c W without the random start's long decay."""

    name: ClassVar[str] = "wm"
    updates_between_steps: ClassVar[bool] = True
    name_options: ClassVar[tuple[str, ...]] = ("every", "steps", "lr", "weight_decay")

    every: PositiveInt = 1
    steps: PositiveInt = 1
    warmup_steps: Count = 100
    batch: PositiveInt = 128
    noise_std: Positive = 1.0
    lr: Positive = 0.01
    weight_decay: Rate = 0.01

    def make_state(self, weight, generator):
        return {
            "backward_weight": _random_like_init(weight, generator),
            "mirror_calls": torch.zeros((), dtype=torch.int64),
        }

    def feedback_weight(self, weight, state):
        return state["backward_weight"]

    def update_state(self, layer):
        state = layer.feedback_state()
        calls = int(state["mirror_calls"])
        state["mirror_calls"].add_(1)
        schedule = []
        if calls == 0 and self.weight_decay > 0:
            ratio = self.lr / self.weight_decay
            schedule += [(ratio / k, 1.0 / k) for k in range(1, self.warmup_steps + 1)]
        if calls % self.every == 0:
            schedule += [(self.lr, self.weight_decay)] * self.steps
        v = state["backward_weight"]
        for lr, weight_decay in schedule:
            x, y = layer.noise_response(self.batch, self.noise_std)
            v.mul_(1.0 - weight_decay).add_(layer.weight_correlation(x, y), alpha=lr)


DFA_DRAWS = ("fan_in", "biotorch")


@register_rule
@dataclass(frozen=True)
class DFA(FeedbackRule):
    """Direct feedback alignment (Nokland 2016): every layer sends e B to its input, e being the
    error at the logits and B fixed and random, times `scale`. Two draws of B:

    - draw="fan_in" (ours, the default): a matrix (classes x the input's D values) uniform on
      [-1 / sqrt(D), 1 / sqrt(D)], PyTorch's initialization of a linear layer from that input
      straight to the classes, so e B is on the scale of the error backprop sends.
    - draw="biotorch" (jsalbert/biotorch HEAD 74fad0d, biotorch/layers/dfa/*.py): Xavier-uniform
      B. A linear layer's is a matrix (classes x in_features), bound sqrt(6 / (in + classes)); a
      conv layer's is a kernel (classes x in_channels x kh x kw), bound sqrt(6 / ((in + classes)
      kh kw)): e is copied to every output position and sent back through the layer's transposed
      convolution with that kernel, so a conv layer's B is shared across positions."""

    name: ClassVar[str] = "dfa"
    routes_global_error: ClassVar[bool] = True
    name_options: ClassVar[tuple[str, ...]] = ("scale",)

    scale: Positive = 1.0
    draw: Literal[DFA_DRAWS] = "fan_in"

    def make_state(self, weight, generator):
        # B's shape is known at the first backward pass; its seed is drawn now, so B is fixed.
        return {"feedback_seed": torch.randint(0, 2**62, (), generator=generator)}

    def feedback_weight(self, weight, state):
        return None

    def direct_feedback(self, state, classes, input_shape, weight_shape=None):
        generator = torch.Generator().manual_seed(int(state["feedback_seed"]))
        size = math.prod(input_shape)
        if self.draw == "fan_in":
            shape, bound = (classes, size), self.scale / math.sqrt(size)
        elif weight_shape is not None and len(weight_shape) == 4:
            receptive = math.prod(weight_shape[2:])
            shape = (classes, *weight_shape[1:])
            bound = self.scale * math.sqrt(6.0 / ((weight_shape[1] + classes) * receptive))
        else:
            shape, bound = (classes, size), self.scale * math.sqrt(6.0 / (size + classes))
        b = torch.rand(shape, generator=generator, dtype=torch.float64)
        return b.mul_(2 * bound).sub_(bound)


def make_rule(name: str, **options) -> FeedbackRule:
    """The rule called `name` with its options; ValueError naming the allowed values otherwise."""
    if isinstance(name, FeedbackRule):
        if options:
            raise ValueError("pass options either in the rule object or as keywords, not both")
        return name
    return RULES.build(name, **options)

"""Feedback rules: how the backward weights V are made from the forward weights W.

Each rule is a small immutable object. `make_state` draws the layer's fixed random state once (it is
registered as buffers on the layer, so it is saved, moved and restored with the model);
`feedback_weight` builds V from the current W and that state at every training step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import ClassVar

import torch

MAGNITUDES = ("uniform", "half_normal")
NAMED_SCALES = ("init_std",)


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
    #: Options whose values go into the run directory's name (asymbp.runs.run_id), e.g. sc0.5.
    name_options: ClassVar[tuple[str, ...]] = ()

    def make_state(
        self, weight: torch.Tensor, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """The layer's fixed random state, drawn once on the CPU (same values on every device)."""
        return {}

    def feedback_weight(self, weight: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def options(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class ScaledRule(FeedbackRule):
    """A rule whose V is multiplied by `scale`: 1.0 keeps the paper's magnitudes, 'init_std'
    is biotorch's and Xiao et al.'s scaling by the initialization std."""

    scale: float | str = 1.0

    def __post_init__(self):
        valid_number = (
            isinstance(self.scale, int | float)
            and not isinstance(self.scale, bool)
            and self.scale >= 0
        )
        if not (valid_number or self.scale in NAMED_SCALES):
            raise ValueError(
                f"feedback scale must be a number >= 0 or one of {NAMED_SCALES}, got {self.scale!r}"
            )

    def _scaled(self, v: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        factor = init_std(weight) if self.scale == "init_std" else float(self.scale)
        return v if factor == 1.0 else v.mul_(factor)


@dataclass(frozen=True)
class RandomMagnitudeRule(ScaledRule):
    """A rule whose V has random non-negative magnitudes M drawn from `magnitude`."""

    magnitude: str = "uniform"

    def __post_init__(self):
        super().__post_init__()
        if self.magnitude not in MAGNITUDES:
            raise ValueError(
                f"feedback magnitude must be one of {MAGNITUDES}, got {self.magnitude!r}"
            )


@dataclass(frozen=True)
class BP(FeedbackRule):
    """Backpropagation, the control: V = W."""

    name: ClassVar[str] = "bp"
    is_exact: ClassVar[bool] = True

    def feedback_weight(self, weight, state):
        return weight.detach()


@dataclass(frozen=True)
class USF(ScaledRule):
    """Uniform sign-concordant feedback: V = sign(W) (times `scale`)."""

    name: ClassVar[str] = "usf"

    def feedback_weight(self, weight, state):
        return self._scaled(torch.sign(weight.detach()), weight)


@dataclass(frozen=True)
class BRSF(RandomMagnitudeRule):
    """Batchwise random-magnitude sign-concordant feedback: V = M * sign(W), M new every batch."""

    name: ClassVar[str] = "brsf"
    redraws_every_batch: ClassVar[bool] = True

    def feedback_weight(self, weight, state):
        w = weight.detach()
        m = _draw_magnitude(w.shape, self.magnitude, device=w.device, dtype=w.dtype)
        return self._scaled(m.mul_(torch.sign(w)), weight)


@dataclass(frozen=True)
class FRSF(RandomMagnitudeRule):
    """Fixed random-magnitude sign-concordant feedback: V = M * sign(W), M drawn once."""

    name: ClassVar[str] = "frsf"

    def make_state(self, weight, generator):
        return {"feedback_magnitude": _draw_magnitude(weight.shape, self.magnitude, generator)}

    def feedback_weight(self, weight, state):
        v = torch.sign(weight.detach()).mul_(state["feedback_magnitude"])
        return self._scaled(v, weight)


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


@dataclass(frozen=True)
class SC(RandomMagnitudeRule):
    """Partial sign concordance: V = M * sign(W) * S with S = +-1 fixed and exactly
    round(concordance * n) of the n entries of S equal to +1."""

    name: ClassVar[str] = "sc"
    name_options: ClassVar[tuple[str, ...]] = ("concordance",)

    concordance: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        if not (isinstance(self.concordance, int | float) and 0.0 <= self.concordance <= 1.0):
            raise ValueError(
                f"feedback concordance must be a fraction in [0, 1], got {self.concordance!r}"
            )

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


RULES: dict[str, type[FeedbackRule]] = {rule.name: rule for rule in (BP, USF, BRSF, FRSF, RNDF, SC)}


def make_rule(name: str, **options) -> FeedbackRule:
    """The rule called `name` with its options; ValueError naming the allowed values otherwise."""
    if isinstance(name, FeedbackRule):
        if options:
            raise ValueError("pass options either in the rule object or as keywords, not both")
        return name
    if name not in RULES:
        raise ValueError(f"unknown feedback rule {name!r}; choose one of {sorted(RULES)}")
    rule = RULES[name]
    allowed = {f.name for f in fields(rule)}
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(
            f"feedback rule {name!r} has no option(s) {sorted(unknown)}; its options are "
            f"{sorted(allowed)}"
        )
    return rule(**options)

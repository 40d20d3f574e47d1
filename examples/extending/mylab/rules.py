"""A feedback rule of our own: sign-concordant feedback whose one magnitude follows W's."""

from dataclasses import dataclass
from typing import ClassVar

import torch

from asymbp.feedback import FeedbackRule, register_rule


@register_rule  # selected by `name: meansign` in conf/feedback/meansign.yaml
@dataclass(frozen=True)
class MeanSign(FeedbackRule):
    """V = sign(W) x mean |W| of the layer, recomputed at every step. The fields of the dataclass
    are the rule's options (its YAML keys besides name and last_layer_bp); this one has none."""

    name: ClassVar[str] = "meansign"

    def feedback_weight(self, weight: torch.Tensor, state: dict) -> torch.Tensor:
        w = weight.detach()
        return torch.sign(w) * w.abs().mean()

"""asymbp: asymmetric backpropagation after Liao, Leibo & Poggio (AAAI 2016)."""

from asymbp.feedback import RULES, FeedbackRule, make_rule, register_rule
from asymbp.layers import (
    AsymmetricConv2d,
    AsymmetricLinear,
    asymmetric_layers,
    convert,
    exact_backprop,
    update_feedback_after_steps,
)
from asymbp.metrics import backward_alignment, error_alignment, weight_alignment
from asymbp.optim import BatchManhattan

__all__ = [
    "RULES",
    "AsymmetricConv2d",
    "AsymmetricLinear",
    "BatchManhattan",
    "FeedbackRule",
    "asymmetric_layers",
    "backward_alignment",
    "convert",
    "error_alignment",
    "exact_backprop",
    "make_rule",
    "register_rule",
    "update_feedback_after_steps",
    "weight_alignment",
]

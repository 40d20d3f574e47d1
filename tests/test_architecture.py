"""The module graph: the layer core stands on its own, and helpers do not pull in the builder."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torchvision

import asymbp


@pytest.mark.parametrize(
    "module, absent",
    [
        ("asymbp.layers", {"asymbp.models", "asymbp.build", "torchvision"}),  # core, no model zoo
        ("asymbp.plugins", {"asymbp.build"}),
        ("asymbp.loggers", {"asymbp.build"}),
    ],
)
def test_a_module_does_not_import_what_it_does_not_need(module, absent):
    # (every import runs asymbp/__init__.py first: feedback, layers, metrics and optim)
    code = f"import sys, {module}; print(sorted(m for m in {sorted(absent)!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("block", ["torchvision", "own"])
def test_dfa_refuses_residual_blocks_of_torchvision_and_of_ones_own(block):
    if block == "torchvision":
        model = torchvision.models.resnet18(num_classes=10)
    else:

        class Shortcut(torch.nn.Module):
            asymbp_residual = True  # the marker a user's block carries

            def __init__(self):
                super().__init__()
                self.fc = torch.nn.Linear(4, 4)

            def forward(self, x):
                return x + self.fc(x)

        model = torch.nn.Sequential(Shortcut(), torch.nn.Linear(4, 3))
    example = torch.zeros(1, 3, 32, 32) if block == "torchvision" else torch.zeros(1, 4)
    with pytest.raises(ValueError, match="needs a chain of layers, but the model has residual"):
        asymbp.convert(model, "dfa", example_input=example)

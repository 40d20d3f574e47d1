"""The `precision` key: bf16 autocast (here on the CPU; tests/test_cuda.py repeats it on CUDA) keeps
every rule's backward product in the forward's precision, close to fp32; tf32 is asked for, never
implied; both are part of a run's identity, fp32 (the default) is not, so older runs keep theirs."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import asymbp
from asymbp import runs
from asymbp.build import configure_torch, validate
from asymbp.config import ConfigError
from asymbp.engine import PRECISIONS, set_tf32
from asymbp.feedback import RULES
from asymbp.train import run

BF16 = torch.bfloat16
#: bf16 keeps 8 significant bits, and under autocast the forward pass too runs in bf16 (other
#: activations, other ReLU masks), so that even backprop's gradients of a small random network
#: differ from fp32's by 5-10% (relative Frobenius error, the worst parameter of the model below;
#: under 1% at the output layer). Measured for the other rules: 4-13% (CPU and an H200). Every
#: rule's worst parameter must stay under BF16_CAP; BF16_MIN shows that bf16 really ran.
BF16_CAP, BF16_MIN = 0.2, 0.01
RULE_OPTIONS = {"sc": {"concordance": 0.5}}
SYNTHETIC = ["dataset=synthetic", "dataset.train_size=256", "dataset.test_size=128"]


def fixed_feedback(model: nn.Module) -> None:
    """Freeze each layer's V at one draw, so that two passes (brSF redraws) use the same V."""
    for _, layer in asymbp.asymmetric_layers(model):
        v = layer.feedback_weight()
        if v is not None:
            layer.feedback_weight = lambda v=v: v


def test_the_linear_feedback_product_is_computed_in_bf16_exactly():
    torch.manual_seed(0)
    model = asymbp.convert(
        nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5)), "usf", seed=0,
        example_input=torch.zeros(2, 20),
    )  # fmt: skip
    layer = model[0]
    x = torch.randn(8, 20, requires_grad=True)
    error = torch.randn(8, 30).to(BF16)
    with PRECISIONS["bf16"].context("cpu"):
        y = layer(x)
    assert y.dtype == BF16
    y.backward(error)
    v = layer.feedback_weight()
    by_hand = (error @ v.to(BF16)).float()  # dx = e V in bf16, as autocast computes e W
    assert torch.equal(x.grad, by_hand)
    assert not torch.equal(by_hand, error.float() @ v)  # fp32 would give other numbers
    assert torch.equal(layer.weight.grad, (error.mT @ x.detach().to(BF16)).float())
    assert layer.weight.grad.dtype == torch.float32  # the parameter's gradient stays fp32


def test_the_conv_feedback_product_is_computed_in_bf16_exactly():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3))
    asymbp.convert(model, "frsf", seed=0, example_input=torch.zeros(2, 3, 6, 6))
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    with PRECISIONS["bf16"].context("cpu"):
        out = model[0](x)
    error = torch.randn_like(out)
    out.backward(error)
    v = model[0].feedback_weight()
    by_hand = torch.nn.grad.conv2d_input(x.shape, v.to(BF16), error, padding=1).float()
    assert torch.equal(x.grad, by_hand)
    fp32 = torch.nn.grad.conv2d_input(x.shape, v, error.float(), padding=1)
    assert not torch.equal(by_hand, fp32)


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def _bf16_errors(rule: str) -> list[float]:
    """Relative error of each parameter's gradient under bf16 autocast against fp32, one batch of a
    small CNN converted to `rule` (the same V in both passes)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10),
    )  # fmt: skip
    asymbp.convert(model, rule, seed=0, example_input=torch.zeros(2, 3, 8, 8),
                   **RULE_OPTIONS.get(rule, {}))  # fmt: skip
    fixed_feedback(model)
    x, y = torch.randn(32, 3, 8, 8), torch.randint(0, 10, (32,))
    grads = {}
    for precision in ("fp32", "bf16"):
        copy_ = copy.deepcopy(model)
        with PRECISIONS[precision].context("cpu"):
            loss = F.cross_entropy(copy_(x), y)
        loss.backward()
        grads[precision] = [p.grad for p in copy_.parameters() if p.grad is not None]
    assert len(grads["bf16"]) == len(grads["fp32"]) >= 8  # every W and b of the 4 layers
    assert all(g.dtype == torch.float32 for g in grads["bf16"])  # parameters' gradients: fp32
    return [_relative_error(a, b) for a, b in zip(grads["bf16"], grads["fp32"], strict=True)]


@pytest.mark.parametrize("rule", sorted(set(RULES) - {"bp"}))
def test_bf16_gradients_of_every_rule_stay_close_to_fp32(rule):
    backprop, errors = _bf16_errors("bp"), _bf16_errors(rule)
    assert BF16_MIN < max(backprop) < BF16_CAP  # the bf16 pass really ran in bf16
    assert all(e > 0 for e in errors)
    assert BF16_MIN < max(errors) < BF16_CAP, errors


def test_precision_is_checked_before_anything_is_written(make_config, tmp_path):
    with pytest.raises(ConfigError, match="precision='fp16' is out of range: fp32 | tf32 | bf16"):
        validate(make_config("precision=fp16"))
    with pytest.raises(ConfigError, match="precision='tf32' needs an NVIDIA GPU"):
        validate(make_config("precision=tf32", "device=cpu"))
    assert not (tmp_path / "outputs").exists()


def test_tf32_is_on_only_when_asked_for(make_config):
    set_tf32(True)  # what PyTorch's default does for cuDNN convolutions
    configure_torch(make_config("precision=fp32"))
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    configure_torch(make_config("precision=bf16"))
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    configure_torch(make_config("precision=tf32", "device=cuda"))
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    set_tf32(False)


def test_precision_is_part_of_the_identity_but_fp32_adds_nothing(make_config):
    fp32, bf16 = make_config("precision=fp32"), make_config("precision=bf16")
    assert runs.run_id(fp32) != runs.run_id(bf16)
    assert "precision" not in runs.identity(fp32) and runs.identity(bf16)["precision"] == "bf16"
    tf32 = make_config("precision=tf32", "device=cuda")
    assert len({runs.run_id(fp32), runs.run_id(bf16), runs.run_id(tf32)}) == 3


def test_a_bf16_run_trains_and_resumes_in_bf16(make_config):
    args = [*SYNTHETIC, "epochs=3", "precision=bf16", "device=cpu", "feedback=usf"]

    class Stop(Exception):
        pass

    def stop_after_one(epoch):
        if epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        run(make_config(*args, "exp_name=interrupted"), on_epoch_end=stop_after_one)
    resumed = run(make_config(*args, "exp_name=interrupted"))
    whole = run(make_config(*args, "exp_name=whole"))
    assert not whole["diverged"] and whole["test_acc"] > 0.5
    for key in ("test_acc", "val_acc", "train_loss", "best_val_acc"):
        assert resumed[key] == whole[key]  # bf16 runs resume bit-identically too
    fp32 = run(make_config(*args[:-3], "device=cpu", "feedback=usf", "exp_name=whole"))
    assert fp32["train_loss"] != whole["train_loss"]  # another computation, another directory

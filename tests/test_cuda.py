"""CUDA paths: skipped cleanly without a GPU; `benchmarks/gpu_check.sh` runs them on one."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import asymbp
from asymbp import runs
from asymbp.feedback import RULES
from asymbp.train import run

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
SYNTHETIC = ["dataset=synthetic", "dataset.train_size=256", "dataset.test_size=128"]
RULE_OPTIONS = {"sc": ["feedback.concordance=0.5"]}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_training_with_every_rule_on_cuda(make_config, rule):
    cfg = make_config(
        *SYNTHETIC, "epochs=2", "device=cuda", f"feedback={rule}", *RULE_OPTIONS.get(rule, [])
    )
    metrics = run(cfg)
    assert metrics["device"].startswith("cuda") and not metrics["diverged"]
    assert metrics["test_acc"] > 0.5
    history = pd.read_csv(runs.run_directory(cfg) / "history.csv")
    assert history.filter(like="angle_error/").notna().all().all()


@pytest.mark.parametrize("rule", ["usf", "brsf", "sc"])
def test_cuda_gradients_match_the_cpu_hand_computation(rule):
    torch.manual_seed(0)
    cpu = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5)
    )
    options = {"concordance": 0.5} if rule == "sc" else {}
    asymbp.convert(cpu, rule, seed=0, **options)
    gpu = copy.deepcopy(cpu).cuda()
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,))
    for layer_cpu, layer_gpu in zip(
        asymbp.asymmetric_layers(cpu), asymbp.asymmetric_layers(gpu), strict=True
    ):
        v = layer_cpu[1].feedback_weight()  # brSF: make both sides use the same V
        layer_cpu[1].feedback_weight = lambda v=v: v
        layer_gpu[1].feedback_weight = lambda v=v: v.cuda()
    F.cross_entropy(cpu(x), y).backward()
    F.cross_entropy(gpu(x.cuda()), y.cuda()).backward()
    for p_cpu, p_gpu in zip(cpu.parameters(), gpu.parameters(), strict=True):
        torch.testing.assert_close(p_gpu.grad.cpu(), p_cpu.grad, rtol=1e-4, atol=1e-5)


def test_deterministic_cuda_runs_are_bit_identical(make_config):
    args = [*SYNTHETIC, "epochs=2", "device=cuda", "feedback=brsf", "deterministic=true"]
    first, second = run(make_config(*args, "exp_name=a")), run(make_config(*args, "exp_name=b"))
    for key in ("test_acc", "val_acc", "train_loss"):
        assert first[key] == second[key]


def test_checkpoint_resumes_across_devices(make_config):
    args = [*SYNTHETIC, "epochs=3", "feedback=frsf"]

    class Stop(Exception):
        pass

    def stop_after_one(epoch):
        if epoch == 1:
            raise Stop

    cfg_cpu = make_config(*args, "device=cpu")
    with pytest.raises(Stop):
        run(cfg_cpu, on_epoch_end=stop_after_one)
    cfg_gpu = make_config(*args, "device=cuda")
    assert runs.run_directory(cfg_cpu) == runs.run_directory(cfg_gpu)  # device is not identity
    metrics = run(cfg_gpu)
    assert metrics["device"].startswith("cuda") and metrics["epochs_completed"] == 3
    history = pd.read_csv(runs.run_directory(cfg_gpu) / "history.csv")
    assert list(history["epoch"]) == [1, 2, 3]

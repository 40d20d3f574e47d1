"""From a composed config to checked values and the objects of a run: device, model, optimizer."""

from __future__ import annotations

import os

import torch
from omegaconf import DictConfig, OmegaConf

from asymbp.feedback import MAGNITUDES, NAMED_SCALES, RULES
from asymbp.layers import convert
from asymbp.models import build_model
from asymbp.optim import SCOPES, SIGN_OF, BatchManhattan

SCHEDULES = ("none", "step", "cosine", "multistep")
RULE_KEYS = ("name", "last_layer_bp")


class ConfigError(ValueError):
    """A config value out of its range; the message names the key and the allowed values."""


def _check(ok: bool, key: str, value, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is out of range: {allowed}")


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for the first value out of its range."""
    _check(isinstance(cfg.epochs, int) and cfg.epochs >= 1, "epochs", cfg.epochs, "an integer >= 1")
    for key in ("batch_size", "eval_batch_size", "alignment_batch"):
        value = cfg[key]
        _check(isinstance(value, int) and value >= 1, key, value, "an integer >= 1")
    _check(isinstance(cfg.seed, int), "seed", cfg.seed, "an integer")
    _check(
        _is_number(cfg.val_fraction) and 0 <= cfg.val_fraction < 1,
        "val_fraction", cfg.val_fraction, "a fraction in [0, 1)",
    )  # fmt: skip
    _check(
        cfg.train_subset is None or (isinstance(cfg.train_subset, int) and cfg.train_subset >= 1),
        "train_subset", cfg.train_subset, "null or an integer >= 1",
    )  # fmt: skip
    _check(cfg.device in ("auto", "cpu", "cuda"), "device", cfg.device, "auto, cpu or cuda")
    _check(
        cfg.threads is None or (isinstance(cfg.threads, int) and cfg.threads >= 1),
        "threads", cfg.threads, "null or an integer >= 1",
    )  # fmt: skip
    _check(
        _is_number(cfg.divergence_loss) and cfg.divergence_loss > 0,
        "divergence_loss", cfg.divergence_loss, "a number > 0",
    )  # fmt: skip
    _check(cfg.progress in ("auto", True, False), "progress", cfg.progress, "auto, true or false")
    _validate_feedback(cfg.feedback)
    _validate_optimizer(cfg.optimizer)
    _check(cfg.norm.scope in SCOPES, "norm.scope", cfg.norm.scope, f"one of {SCOPES}")
    _check(cfg.norm.sign_of in SIGN_OF, "norm.sign_of", cfg.norm.sign_of, f"one of {SIGN_OF}")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but no CUDA device is available: use device=auto or cpu")


def _validate_feedback(fb: DictConfig) -> None:
    _check(fb.name in RULES, "feedback.name", fb.name, f"one of {sorted(RULES)}")
    if "concordance" in fb:
        value = fb.concordance
        ok = _is_number(value) and 0 <= value <= 1
        _check(ok, "feedback.concordance", value, "a fraction in [0, 1]")
    if "scale" in fb:
        ok = (_is_number(fb.scale) and fb.scale >= 0) or fb.scale in NAMED_SCALES
        _check(ok, "feedback.scale", fb.scale, f"a number >= 0 or one of {NAMED_SCALES}")
    if "magnitude" in fb:
        _check(
            fb.magnitude in MAGNITUDES, "feedback.magnitude", fb.magnitude, f"one of {MAGNITUDES}"
        )


def _validate_optimizer(opt: DictConfig) -> None:
    for key in ("lr", "bm_lr"):
        _check(_is_number(opt[key]) and opt[key] > 0, f"optimizer.{key}", opt[key], "a number > 0")
    _check(
        _is_number(opt.weight_decay) and opt.weight_decay >= 0,
        "optimizer.weight_decay", opt.weight_decay, "a number >= 0",
    )  # fmt: skip
    if "momentum" in opt:
        ok = _is_number(opt.momentum) and 0 <= opt.momentum < 1
        _check(ok, "optimizer.momentum", opt.momentum, "a number in [0, 1)")
    _check(opt.schedule in SCHEDULES, "optimizer.schedule", opt.schedule, f"one of {SCHEDULES}")
    if opt.schedule == "multistep":
        milestones = opt.get("milestones")
        ok = bool(milestones) and all(isinstance(m, int) and m > 0 for m in milestones)
        _check(ok, "optimizer.milestones", milestones, "a list of epochs > 0 (multistep)")


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def configure_torch(cfg: DictConfig) -> None:
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        # cuBLAS needs this workspace setting before its first use to be deterministic.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def make_model(cfg: DictConfig, input_shape: tuple[int, ...], num_classes: int) -> torch.nn.Module:
    """The architecture, with BN where the norm asks for it, converted to the feedback rule."""
    options = {
        k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if k != "name"
    }
    # Feature vectors (D,) are 1x1 "images" with D channels.
    image_size = input_shape[-1] if len(input_shape) == 3 else 1
    model = build_model(
        cfg.model.name,
        in_channels=input_shape[0],
        image_size=image_size,
        num_classes=num_classes,
        batch_norm=cfg.norm.batch_norm,
        **options,
    )
    rule_options = {
        k: v
        for k, v in OmegaConf.to_container(cfg.feedback, resolve=True).items()
        if k not in RULE_KEYS
    }
    return convert(
        model,
        cfg.feedback.name,
        last_layer_bp=cfg.feedback.last_layer_bp,
        seed=cfg.seed,
        **rule_options,
    )


def make_optimizer(cfg: DictConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    opt, norm = cfg.optimizer, cfg.norm
    lr = opt.bm_lr if norm.batch_manhattan else opt.lr
    if opt.name == "sgd":
        optimizer = torch.optim.SGD(
            model.parameters(),
            lr=lr,
            momentum=opt.momentum,
            nesterov=opt.nesterov,
            weight_decay=opt.weight_decay,
        )
    elif opt.name == "adam":
        optimizer = torch.optim.Adam(
            model.parameters(), lr=lr, betas=tuple(opt.betas), weight_decay=opt.weight_decay
        )
    else:
        raise ConfigError(f"optimizer.name={opt.name!r} is out of range: one of ('sgd', 'adam')")
    if norm.batch_manhattan:
        optimizer = BatchManhattan(optimizer, scope=norm.scope, sign_of=norm.sign_of, model=model)
    return optimizer


def make_scheduler(cfg: DictConfig, optimizer: torch.optim.Optimizer):
    schedule = cfg.optimizer.schedule
    if schedule == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=cfg.optimizer.step_size, gamma=cfg.optimizer.gamma
        )
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if schedule == "multistep":  # times gamma at each epoch of optimizer.milestones (biotorch's)
        return torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=list(cfg.optimizer.milestones), gamma=cfg.optimizer.gamma
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)

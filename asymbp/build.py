"""From a composed config to checked values and the objects of a run: device, model, optimizer."""

from __future__ import annotations

import contextlib
import difflib
import functools
import os
import sys
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Literal

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from asymbp import finetune, loggers, robustness
from asymbp.config import CONFIG_DIR, GROUPS, ConfigError, out_of_range
from asymbp.data import DATASETS
from asymbp.engine import PRECISIONS, set_tf32
from asymbp.feedback import RULES, FeedbackRule
from asymbp.layers import convert
from asymbp.models import CONTRACT, MODELS, build_model
from asymbp.optim import (
    OPTIMIZER_KEYS,
    OPTIMIZERS,
    SCHEDULES,
    SCOPES,
    SIGN_OF,
    BatchManhattan,
    OptimizerKeys,
    output_layer_parameters,
)
from asymbp.registry import (
    Positive,
    PositiveInt,
    Rate,
    Seed,
    check_values,
    declarations,
    options_of,
)
from asymbp.runs import NAME_MAX

#: feedback keys that configure the conversion, not the rule object.
RULE_KEYS = ("name", "last_layer_bp", "modules")
#: How feedback.modules is written (the error for a malformed one shows it).
MODULES_EXAMPLE = "feedback.modules='[{match: \"*attn*\", name: bp}]'"
#: The keys of a norm config (read by make_model and make_optimizer) and what each may be.
NORM_KEYS = {
    "name": str, "batch_norm": bool, "batch_manhattan": bool, "scope": Literal[SCOPES],
    "sign_of": Literal[SIGN_OF],
}  # fmt: skip
#: train.yaml's numeric and true/false keys and what each may be (checked by
#: registry.check_values, as every group's options are from their components' annotations): a
#: string is not a boolean (`force=maybe` would be true).
TOP_LEVEL = {
    "epochs": PositiveInt, "batch_size": PositiveInt, "eval_batch_size": PositiveInt,
    "alignment_batch": PositiveInt, "seed": Seed, "val_seed": Seed, "val_fraction": Rate,
    "train_subset": PositiveInt | None, "threads": PositiveInt | None, "divergence_loss": Positive,
    "deterministic": bool, "force": bool, "alignment": bool, "dry_run": bool, "sweep_report": bool,
}  # fmt: skip


def _check(ok: bool, key: str, value, allowed: str) -> None:
    if not ok:
        raise out_of_range(key, value, allowed)


@contextlib.contextmanager
def _constructing(what: str):
    """A ValueError/TypeError raised while building `what` from the config is a ConfigError."""
    try:
        yield
    except ConfigError:
        raise  # already names its key
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{what}: {error}") from None


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for the first key that is unknown or out of range, before any data is
    read: the feedback rule, the optimizer (with Batch Manhattan) and the scheduler are built on a
    stand-in parameter, the model's and the dataset's options are bound to their signatures, so
    each option is checked in one place, by the code that uses it."""
    _check_known_keys(cfg)
    check_values("", {key: cfg[key] for key in TOP_LEVEL}, TOP_LEVEL)
    _check_device(cfg.device)
    _check_precision(cfg.precision, cfg.device)
    _check(cfg.progress in ("auto", True, False), "progress", cfg.progress, "auto, true or false")
    _check(
        cfg.output_layer is None or (isinstance(cfg.output_layer, str) and cfg.output_layer),
        "output_layer", cfg.output_layer, "null or a layer's name, e.g. fc or classifier.2",
    )  # fmt: skip
    _check_exp_name(cfg.exp_name)
    feedback_rule(cfg)
    module_rules(cfg)
    finetune.check(cfg)
    if cfg.get("attack") is not None:
        robustness.check(cfg.attack)
    loggers.check(cfg)
    _check_optimizer(cfg)
    _check_options("model", cfg.model, MODELS, CONTRACT)
    _check_options("dataset", cfg.dataset, DATASETS, ())


def _check_device(device) -> None:
    """auto, cpu, cuda or cuda:K (K a visible GPU), and CUDA only where there is a GPU."""
    allowed = "auto, cpu, cuda or cuda:K (K: a visible GPU's index)"
    name = str(device)
    index = name.removeprefix("cuda:")
    ok = name in ("auto", "cpu", "cuda") or (name.startswith("cuda:") and index.isdigit())
    _check(isinstance(device, str) and ok, "device", device, allowed)
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device={name!r} but no CUDA device is available: use device=auto or cpu"
        )
    if index.isdigit() and int(index) >= torch.cuda.device_count():
        raise ConfigError(
            f"device={name!r} but only {torch.cuda.device_count()} GPU(s) are visible: use "
            f"cuda:0 to cuda:{torch.cuda.device_count() - 1}, or device=cuda"
        )


def _check_precision(precision, device) -> None:
    """A value of engine.PRECISIONS; tf32 only where it can change anything (a CUDA GPU)."""
    _check(
        isinstance(precision, str) and precision in PRECISIONS,
        "precision", precision, " | ".join(PRECISIONS),
    )  # fmt: skip
    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    if PRECISIONS[precision].tf32 and on_cpu:
        raise ConfigError(
            "precision='tf32' needs an NVIDIA GPU (on the CPU it is fp32 under another run "
            "directory): use precision=fp32, or bf16 for reduced precision on the CPU"
        )


@functools.cache
def _top_level_keys() -> frozenset[str]:
    """The keys train.yaml declares, and the groups its defaults list chooses."""
    primary = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "train.yaml"))
    groups = set(GROUPS)
    for entry in primary.pop("defaults", []):
        if isinstance(entry, dict):
            groups.update(key for key in entry if not key.startswith("override "))
    return frozenset(primary) | groups | {"hydra"}


def _leaf_keys(node, prefix: str = "") -> list[str]:
    keys = []
    for key, value in node.items():
        if prefix == "" and key == "hydra":
            continue
        dotted = f"{prefix}{key}"
        keys += _leaf_keys(value, f"{dotted}.") if isinstance(value, dict) else [dotted]
    return keys


def _unknown_key(cfg: DictConfig, key: str, where: str) -> ConfigError:
    """The error for a key no code reads, with the config's nearest keys as the likely intent."""
    known = [k for k in _leaf_keys(OmegaConf.to_container(cfg)) if k != key]
    leaf = key.rsplit(".", 1)[-1]
    same_leaf = [k for k in known if k.rsplit(".", 1)[-1] == leaf]
    close = same_leaf or difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}?" if close else "see `asymbp-train --cfg job`"
    return ConfigError(f"{key} is not a key of {where}: {hint}")


def _check_known_keys(cfg: DictConfig) -> None:
    """Keys added on the command line (`+lr=1`) that nothing would read are refused."""
    for key in cfg:
        if key not in _top_level_keys():
            raise _unknown_key(cfg, str(key), "the config")
    for key in cfg.norm:
        if key not in NORM_KEYS:
            raise _unknown_key(cfg, f"norm.{key}", f"norm {cfg.norm.name}")
    check_values("norm", options_of(cfg.norm), NORM_KEYS)


def _check_exp_name(name) -> None:
    """exp_name is a relative folder inside output_root, visible to the aggregator."""
    allowed = "a relative folder name: no '..', no absolute path, no leading dot"
    _check(isinstance(name, str | int) and str(name).strip() != "", "exp_name", name, allowed)
    path = PurePosixPath(str(name))
    ok = not path.is_absolute() and all(
        p not in ("", "..") and not p.startswith(".") for p in path.parts
    )
    _check(ok, "exp_name", name, allowed)
    for part in path.parts:
        _check(
            len(part.encode()) <= NAME_MAX, "exp_name", name,
            f"each folder name at most {NAME_MAX} bytes ({len(part.encode())} given)",
        )  # fmt: skip


def feedback_rule(cfg: DictConfig) -> FeedbackRule:
    """The rule object the feedback config describes (feedback.RULES builds it)."""
    last = {"last_layer_bp": cfg.feedback.get("last_layer_bp", False)}
    check_values("feedback", last, {"last_layer_bp": bool})
    return RULES.build_from(cfg.feedback, skip=RULE_KEYS)


def module_rules(cfg: DictConfig) -> list[tuple[str, FeedbackRule]]:
    """feedback.modules as convert's (pattern, rule) pairs: each entry a mapping with `match` (a
    layer-name pattern) and `name` (a rule) and the rule's options; ConfigError naming the entry
    otherwise. Whether each pattern matches a layer is checked when the model is built."""
    entries = cfg.feedback.get("modules")
    if entries is None:
        return []
    if not isinstance(entries, ListConfig | list):
        raise ConfigError(
            f"feedback.modules must be a list of {{match: PATTERN, name: RULE, ...}}, e.g. "
            f"{MODULES_EXAMPLE}; got {entries!r}"
        )
    pairs = []
    for index, entry in enumerate(entries):
        where = f"feedback.modules[{index}]"
        if not isinstance(entry, DictConfig | dict) or "name" not in entry:
            raise ConfigError(f"{where} needs a match and a name, e.g. {MODULES_EXAMPLE}")
        pattern = entry.get("match")
        _check(isinstance(pattern, str) and pattern != "", f"{where}.match", pattern,
               "a layer-name pattern, e.g. '*attn*' or 'blocks.0.*'")  # fmt: skip
        try:
            pairs.append((pattern, RULES.build_from(entry, skip=("match",))))
        except (ValueError, TypeError) as error:  # ConfigError included: say which entry
            raise ConfigError(f"{where}: {error}") from None
    return pairs


def _optimizer_choice(cfg: DictConfig) -> tuple[Callable[..., torch.optim.Optimizer], dict]:
    """The builder of optimizer.name (optim.OPTIMIZERS) and its keyword arguments (without lr)."""
    kwargs = options_of(cfg.optimizer, skip=OPTIMIZER_KEYS)
    OPTIMIZERS.check(cfg.optimizer.name, kwargs, provided=("lr",), positional=1)
    return OPTIMIZERS[cfg.optimizer.name], kwargs


def _check_optimizer(cfg: DictConfig) -> None:
    """Build the optimizer, Batch Manhattan and the scheduler on a stand-in parameter."""
    opt = cfg.optimizer
    shared = {k: v for k, v in options_of(opt).items() if k in OPTIMIZER_KEYS}
    check_values("optimizer", shared, declarations(OptimizerKeys))
    SCHEDULES.get_or_fail(opt.schedule)
    if opt.schedule == "multistep" and not opt.get("milestones"):
        raise out_of_range(
            "optimizer.milestones", opt.get("milestones"), "a list of epochs > 0 (multistep)"
        )
    stand_in = convert(torch.nn.Sequential(torch.nn.Linear(1, 1)), example_input=torch.zeros(1, 1))
    with _constructing(f"optimizer={opt.name}"):
        optimizer = _make_optimizer(cfg, stand_in)
    with _constructing(f"norm={cfg.norm.name}"):
        if cfg.norm.batch_manhattan:
            BatchManhattan(
                optimizer, scope=cfg.norm.scope, sign_of=cfg.norm.sign_of, model=stand_in
            )


def _check_options(group: str, node: DictConfig, registry, provided: tuple[str, ...]) -> None:
    """The group's options bound to the signature of the function registered under its name."""
    registry.check(node.name, options_of(node), provided=provided)


def select_device(name: str) -> torch.device:
    """The torch device of the `device` key; a CUDA device becomes the process's current one, so
    that nothing (cuDNN handles, the allocator) lands on another GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    return device


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def configure_torch(cfg: DictConfig) -> None:
    """Threads, TF32 and determinism for the run. threads above the cores this process may use
    is lowered to them with a one-line warning (more threads than cores only slows torch)."""
    if cfg.threads is not None and cfg.threads > (cores := available_cores()):
        print(
            f"asymbp-train: warning: threads={cfg.threads} is more than the {cores} cores this "
            f"process may use: using {cores}",
            file=sys.stderr,
        )
        cfg.threads = cores
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    set_tf32(PRECISIONS[cfg.precision].tf32)
    if cfg.deterministic:
        # cuBLAS needs this workspace setting before its first use to be deterministic.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def make_model(cfg: DictConfig, input_shape: tuple[int, ...], num_classes: int) -> torch.nn.Module:
    """The architecture, with BN where the norm asks for it, converted to the feedback rule; a
    model that cannot take the dataset's inputs is a ConfigError."""
    options = {
        k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if k != "name"
    }
    # Feature vectors (D,) are 1x1 "images" with D channels.
    image_size = input_shape[-1] if len(input_shape) == 3 else 1
    with _constructing(f"model={cfg.model.name} on dataset={cfg.dataset.name}"):
        model = build_model(
            cfg.model.name,
            in_channels=input_shape[0],
            image_size=image_size,
            num_classes=num_classes,
            batch_norm=cfg.norm.batch_norm,
            **options,
        )
    # e.g. DFA on a residual model: a one-line config error
    # The output layer (last_layer_bp, norm.scope=hidden) from a forward pass of two zero inputs.
    with _constructing(f"feedback={cfg.feedback.name} with model={cfg.model.name}"):
        return convert(
            model,
            feedback_rule(cfg),
            last_layer_bp=cfg.feedback.last_layer_bp,
            modules=module_rules(cfg),
            seed=cfg.seed,
            example_input=torch.zeros(2, *input_shape),
            output_layer=cfg.output_layer,
        )


def _make_optimizer(cfg: DictConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """One parameter group at bm_lr under Batch Manhattan, else at lr; with norm.scope=hidden the
    output layer, which Batch Manhattan leaves alone, is a second group at optimizer.lr."""
    cls, kwargs = _optimizer_choice(cfg)
    if not cfg.norm.batch_manhattan:
        return cls(model.parameters(), lr=cfg.optimizer.lr, **kwargs)
    if cfg.norm.scope != "hidden":
        return cls(model.parameters(), lr=cfg.optimizer.bm_lr, **kwargs)
    plain = output_layer_parameters(model)
    signed = [p for p in model.parameters() if all(p is not q for q in plain)]
    groups = [
        {"params": signed, "lr": cfg.optimizer.bm_lr},
        {"params": plain, "lr": cfg.optimizer.lr},
    ]
    return cls([group for group in groups if group["params"]], lr=cfg.optimizer.bm_lr, **kwargs)


def make_optimizer(cfg: DictConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """optimizer.name's torch optimizer, wrapped in BatchManhattan when the norm asks for it.
    (A rule that learns V between steps, weight mirror, needs asymbp.layers.
    update_feedback_after_steps(model, optimizer) too: the training loop attaches it.)"""
    optimizer = _make_optimizer(cfg, model)
    norm = cfg.norm
    if norm.batch_manhattan:
        optimizer = BatchManhattan(optimizer, scope=norm.scope, sign_of=norm.sign_of, model=model)
    return optimizer


def make_scheduler(cfg: DictConfig, optimizer: torch.optim.Optimizer):
    """optimizer.schedule's LR scheduler (optim.SCHEDULES), stepped once per epoch."""
    return SCHEDULES.get_or_fail(cfg.optimizer.schedule)(optimizer, cfg.epochs, cfg.optimizer)

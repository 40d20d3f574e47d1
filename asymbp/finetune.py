"""Fine-tuning from another run (`init_from`): a run starts from the weights of a finished run,
named by its run directory or by its config (this run's config with some values changed), and
trains on under its own rule: "pretrain with backprop, fine-tune with sign symmetry".

`init_from: {feedback: bp}` names the run that differs from this one in its feedback rule only
(same data, model, seed, epochs, exp_name, ...); group choices (dataset, model, feedback, norm,
optimizer) take that option's whole config, other keys (`epochs: 10`, `optimizer.lr: 0.1`) their
value. That run is found by its run directory and, when missing, trained first, under its lock, so
that a sweep of fine-tunings trains it once. `init_from: PATH` names a finished run directory.
Only the architecture's weights and buffers are taken (W, b, normalization statistics), never the
source's feedback state, optimizer or history: the fine-tuning's rule draws its own V.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from asymbp import runs
from asymbp.config import CONFIG_DIR, GROUPS, ConfigError
from asymbp.layers import asymmetric_layers

#: Seconds between two looks at a source run that another process is training.
WAIT_SECONDS = 2.0
_MISSING = object()
#: How init_from is written (errors show it).
EXAMPLE = "init_from='{feedback: bp}' or init_from=outputs/EXP/RUN_DIR"


def check(cfg: DictConfig) -> None:
    """ConfigError unless init_from is null, a run directory's path or a mapping of this
    config's keys (not init_from itself) that changes at least one value."""
    value = cfg.get("init_from")
    if value is None:
        return
    if isinstance(value, str):
        if not value.strip():
            raise ConfigError(f"init_from={value!r} is empty: {EXAMPLE}")
        return
    if not isinstance(value, Mapping):
        raise ConfigError(f"init_from={value!r} is not a run directory or a mapping: {EXAMPLE}")
    if not value:
        raise ConfigError(f"init_from={{}} names this run itself: {EXAMPLE}")
    for key in value:
        if key == "init_from" or OmegaConf.select(cfg, str(key), default=_MISSING) is _MISSING:
            raise ConfigError(f"init_from.{key} is not a key of the config: {EXAMPLE}")


def source_config(cfg: DictConfig) -> DictConfig:
    """The config of the run that `init_from: {...}` names: this one with those values."""
    changes = OmegaConf.to_container(cfg.init_from, resolve=True)
    source = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    choices = {k: v for k, v in changes.items() if k in GROUPS}
    if choices:
        composed = _compose([f"{group}={option}" for group, option in choices.items()])
        for group in choices:
            source[group] = composed[group]
    for key, value in changes.items():
        if key not in GROUPS:
            OmegaConf.update(source, key, value, force_add=False)
    source.init_from = None
    source.force = False  # a forced fine-tuning reruns itself, not its source
    if runs.identity(source) == runs.identity(_without_init(cfg)):
        raise ConfigError(f"init_from={changes} names this run itself: change a value")
    return source


def _without_init(cfg: DictConfig) -> DictConfig:
    plain = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    plain.init_from = None
    return plain


def _compose(overrides: list[str]) -> DictConfig:
    """The training config composed with `overrides` (group choices), inside a running Hydra app
    or on its own."""
    try:
        if GlobalHydra.instance().is_initialized():
            return compose(config_name="train", overrides=overrides)
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            return compose(config_name="train", overrides=overrides)
    except Exception as error:  # Hydra's composition errors: an unknown option, a typo
        line = str(error).splitlines()[0]
        raise ConfigError(f"init_from: {line}") from None


def source_directory(cfg: DictConfig) -> Path | None:
    """The source run's directory (None without init_from)."""
    value = cfg.get("init_from")
    if value is None:
        return None
    if isinstance(value, str):
        return Path(value)
    return runs.run_directory(source_config(cfg))


def prepare(cfg: DictConfig, train: Callable[[DictConfig], dict]) -> Path | None:
    """The finished source run's directory, training it first (`train`, i.e. asymbp's run) when
    init_from names it by config and it is not finished; waits while another process trains it.
    ConfigError (nothing written) for a run directory that is not a finished run with its
    checkpoint."""
    value = cfg.get("init_from")
    if value is None:
        return None
    directory = source_directory(cfg)
    if not isinstance(value, str):
        source = source_config(cfg)
        while runs.finished_metrics(directory) is None:
            try:
                train(source)
            except runs.RunBusy:
                print(
                    f"asymbp-train: waiting for {directory} (another process trains it)",
                    file=sys.stderr,
                    flush=True,
                )
                time.sleep(WAIT_SECONDS)
    try:
        runs.finished_model(directory)
    except runs.RunError as error:
        named = ", or name it by its config, e.g. init_from='{feedback: bp}'"
        named = named if isinstance(value, str) else ""
        raise ConfigError(f"init_from={str(value)!r}: {error}{named}") from None
    return directory


def load_weights(model: torch.nn.Module, directory: Path) -> None:
    """Copy the source run's weights and buffers into `model`, leaving `model`'s feedback state
    (its rule's V) as it is; ConfigError when the architectures differ."""
    checkpoint = runs.load_checkpoint(directory / runs.CHECKPOINT)
    if checkpoint is None:
        raise ConfigError(f"init_from: {directory / runs.CHECKPOINT} cannot be read")
    weights = checkpoint["model"]
    feedback = {
        f"{name}.{state}" for name, layer in asymmetric_layers(model)
        for state in layer._feedback_state_names
    }  # fmt: skip
    target = {k: v for k, v in model.state_dict().items() if k not in feedback}
    missing = [k for k in target if k not in weights]
    wrong = [k for k in target if k in weights and weights[k].shape != target[k].shape]
    if missing or wrong:
        key = (missing or wrong)[0]
        what = "lacks" if missing else f"has another shape {tuple(weights[key].shape)} for"
        raise ConfigError(
            f"init_from: the model of {directory} does not fit this one: it {what} {key} "
            f"({len(missing) + len(wrong)} of {len(target)} tensors differ): use the same model "
            "and dataset"
        )
    with torch.no_grad():
        for key, tensor in target.items():
            tensor.copy_(weights[key])

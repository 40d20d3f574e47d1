"""asymbp-train: one training run (or a Hydra `-m` sweep of them).

`run(cfg, out_dir)` does the work and is what tests call; `main` is the thin @hydra.main wrapper.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import hydra
import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from asymbp import runs
from asymbp.build import (
    ConfigError,
    configure_torch,
    make_model,
    make_optimizer,
    make_scheduler,
    select_device,
    validate,
)
from asymbp.config import CONFIG_DIR, GROUPS
from asymbp.data import DatasetError, channel_stats, load_dataset, stratified_split
from asymbp.engine import Normalizer, evaluate, train_epoch
from asymbp.metrics import error_alignment, weight_alignment

log = logging.getLogger("asymbp")


def _made_dir(path: str) -> str:
    """${asymbp.mkdir:DIR} is DIR, created: the hparams_search presets keep their Optuna study
    (sqlite) in the sweep folder, which Hydra creates only after the sweeper opened the study."""
    Path(path).mkdir(parents=True, exist_ok=True)
    return path


OmegaConf.register_new_resolver("asymbp.mkdir", _made_dir, replace=True)


class Splits:
    """Train / validation / test tensors on the device, and their normalizer."""

    def __init__(self, cfg: DictConfig, device: torch.device):
        options = {
            k: v
            for k, v in OmegaConf.to_container(cfg.dataset, resolve=True).items()
            if k != "name"
        }
        data = load_dataset(cfg.dataset.name, **options)
        self.num_classes = data.num_classes
        self.input_shape = data.input_shape
        images, labels = data.train_images, data.train_labels
        if cfg.val_fraction > 0:
            keep, held = stratified_split(labels, cfg.val_fraction, cfg.val_seed)
        else:
            keep, held = torch.arange(labels.numel()), torch.arange(0)
        if cfg.train_subset is not None and cfg.train_subset < keep.numel():
            fraction = cfg.train_subset / keep.numel()
            keep = keep[stratified_split(labels[keep], fraction, cfg.val_seed)[1]]
        mean, std = channel_stats(images[keep])  # statistics of the training split only
        self.normalize = Normalizer(mean, std, len(self.input_shape), device)
        self.train = (images[keep].to(device), labels[keep].to(device))
        self.val = (images[held].to(device), labels[held].to(device))
        self.test = (data.test_images.to(device), data.test_labels.to(device))
        self.description = (
            f"{data.name}: {keep.numel()} train, {held.numel()} validation, "
            f"{data.test_labels.numel()} test samples of shape {self.input_shape}, "
            f"{self.num_classes} classes"
        )


@contextlib.contextmanager
def _logging_to(run_dir: Path):
    """Log lines go to stderr and to the run directory's train.log for the duration of a run."""
    log.setLevel(logging.INFO)
    log.propagate = False
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    handlers = [logging.StreamHandler(sys.stderr), logging.FileHandler(run_dir / runs.LOG)]
    for handler in handlers:
        handler.setFormatter(fmt)
        log.addHandler(handler)
    try:
        yield
    finally:
        for handler in handlers:
            log.removeHandler(handler)
            handler.close()


def _rng_state() -> dict:
    state = {"torch": torch.random.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.random.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _alignment_columns(model, batch) -> dict[str, float]:
    columns = {}
    for layer, values in weight_alignment(model).items():
        for metric, value in values.items():
            columns[f"{metric}/{layer}"] = value
    for layer, angle in error_alignment(model, *batch).items():
        columns[f"angle_error/{layer}"] = angle
    return columns


def _final_metrics(cfg, history, diverged, wall_seconds, device) -> dict:
    last = history[-1]
    best = max(history, key=lambda row: -1.0 if math.isnan(row["val_acc"]) else row["val_acc"])
    completed = len(history) - (1 if diverged else 0)
    return {
        "test_acc": last["test_acc"],
        "test_error": 1.0 - last["test_acc"],
        "val_acc": last["val_acc"],
        "best_val_acc": best["val_acc"],
        "best_val_epoch": best["epoch"],
        "test_acc_at_best_val": best["test_acc"],
        "train_loss": last["train_loss"],
        "epochs_completed": completed,
        "diverged": diverged,
        "wall_seconds": wall_seconds,
        "device": str(device),
        "torch_version": torch.__version__,
        "seed": cfg.seed,
        **{group: str(cfg[group].name) for group in GROUPS},
    }


def _json_safe(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def run(
    cfg: DictConfig,
    out_dir: str | Path | None = None,
    *,
    on_epoch_end: Callable[[int], None] | None = None,
) -> dict:
    """Train one configuration into `out_dir` (default: its run directory) and return metrics.json.

    A finished run (DONE) is skipped; an interrupted one resumes from its last completed epoch.
    `on_epoch_end(epoch)` is called after each epoch is saved (tests use it to interrupt a run).
    """
    validate(cfg)
    run_dir = Path(out_dir) if out_dir is not None else runs.run_directory(cfg)
    if cfg.force:
        runs.clear(run_dir)
    if runs.is_done(run_dir):
        metrics = json.loads((run_dir / runs.METRICS).read_text())
        print(f"skipped (already done): test_acc={metrics['test_acc']} run_dir={run_dir}")
        return metrics

    configure_torch(cfg)
    device = select_device(cfg.device)
    torch.manual_seed(cfg.seed)
    splits = Splits(cfg, device)
    model = make_model(cfg, splits.input_shape, splits.num_classes).to(device)
    optimizer = make_optimizer(cfg, model)
    scheduler = make_scheduler(cfg, optimizer)
    order = torch.Generator().manual_seed(cfg.seed)

    run_dir.mkdir(parents=True, exist_ok=True)
    runs.write_text(run_dir / runs.CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
    with _logging_to(run_dir):
        return _train(
            cfg, run_dir, splits, model, optimizer, scheduler, order, device, on_epoch_end
        )


def _train(cfg, run_dir, splits, model, optimizer, scheduler, order, device, on_epoch_end) -> dict:
    log.info("%s", splits.description)
    history, wall_seconds = [], 0.0
    checkpoint = runs.load_checkpoint(run_dir / runs.CHECKPOINT, device)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        order.set_state(checkpoint["order"])
        _set_rng_state(checkpoint["rng"])
        history, wall_seconds = checkpoint["history"], checkpoint["wall_seconds"]
        log.info("resuming %s after epoch %d", run_dir, len(history))
    n_align = min(cfg.alignment_batch, splits.train[1].numel())
    align_batch = (splits.normalize(splits.train[0][:n_align]), splits.train[1][:n_align])
    progress = sys.stderr.isatty() if cfg.progress == "auto" else bool(cfg.progress)
    eval_args = (splits.normalize, cfg.eval_batch_size)

    diverged = False
    for epoch in range(len(history) + 1, cfg.epochs + 1):
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        result = train_epoch(
            model, optimizer, *splits.train, splits.normalize, cfg.batch_size, order,
            cfg.divergence_loss, progress=progress, description=f"epoch {epoch}/{cfg.epochs}",
        )  # fmt: skip
        scheduler.step()
        row = {
            "epoch": epoch,
            "train_loss": result.loss,
            "train_acc": result.accuracy,
            "val_acc": evaluate(model, *splits.val, *eval_args),
            "test_acc": evaluate(model, *splits.test, *eval_args),
            "lr": lr,
        }
        if cfg.alignment and not result.diverged:
            row.update(_alignment_columns(model, align_batch))
        row["seconds"] = time.perf_counter() - start
        wall_seconds += row["seconds"]
        history.append(row)
        log.info(
            "epoch %d/%d loss %.4f train %.4f val %.4f test %.4f (%.1fs)%s",
            epoch, cfg.epochs, row["train_loss"], row["train_acc"], row["val_acc"],
            row["test_acc"], row["seconds"], " DIVERGED" if result.diverged else "",
        )  # fmt: skip
        _write_history(run_dir, history)
        if result.diverged:
            diverged = True
            break
        runs.save_checkpoint(
            run_dir / runs.CHECKPOINT,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "order": order.get_state(),
                "rng": _rng_state(),
                "history": history,
                "wall_seconds": wall_seconds,
            },
        )
        if on_epoch_end is not None:
            on_epoch_end(epoch)

    metrics = _final_metrics(cfg, history, diverged, wall_seconds, device)
    runs.write_json(run_dir / runs.METRICS, {k: _json_safe(v) for k, v in metrics.items()})
    runs.write_text(run_dir / runs.DONE, "")
    log.info("done: test_acc=%.4f diverged=%s", metrics["test_acc"], diverged)
    print(f"test_acc={metrics['test_acc']:.4f} diverged={diverged} run_dir={run_dir}")
    return metrics


def _write_history(run_dir: Path, history: list[dict]) -> None:
    first = ["epoch", "train_loss", "train_acc", "val_acc", "test_acc", "lr", "seconds"]
    frame = pd.DataFrame(history)
    # Alignment columns keep the model's layer order (input to output), metric by metric.
    columns = first + [c for c in frame.columns if c not in first]
    runs.write_text(run_dir / runs.HISTORY, frame[columns].to_csv(index=False))


def _launcher_threads() -> int | None:
    """Torch threads for one job of a parallel launcher, so that jobs do not oversubscribe cores:
    cores / n_jobs under joblib, cpus_per_task under submitit; None elsewhere."""
    if not HydraConfig.initialized():
        return None
    launcher = HydraConfig.get().launcher
    target = str(launcher.get("_target_", ""))
    if target.endswith("JoblibLauncher"):
        cores = os.cpu_count() or 1
        n_jobs = launcher.n_jobs if launcher.n_jobs > 0 else cores + 1 + launcher.n_jobs
        return max(1, cores // max(1, n_jobs))
    if "submitit_launcher" in target and launcher.get("cpus_per_task"):
        return int(launcher.cpus_per_task)
    return None


def objective(metrics: dict) -> float:
    """What a sweeper that optimizes (hparams_search: Optuna) maximizes: the best validation
    accuracy; 0.0 for a diverged run or one without a validation split."""
    value = metrics.get("best_val_acc")
    finite = isinstance(value, int | float) and math.isfinite(value)
    return float(value) if finite and not metrics.get("diverged") else 0.0


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float:
    if cfg.threads is None:
        cfg.threads = _launcher_threads()
    try:
        metrics = run(cfg)
    except (ConfigError, DatasetError) as error:
        print(f"asymbp-train: error: {error}", file=sys.stderr)
        sys.exit(2)
    return objective(metrics)


if __name__ == "__main__":
    main()

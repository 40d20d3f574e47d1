"""asymbp-train: one training run (or a Hydra `-m` sweep of them).

`run(cfg, out_dir)` does the work and is what tests call; `main` is the thin @hydra.main wrapper.
`run` reads top to bottom: check the config, find the run directory, load the data (data.Splits),
build the run's state (runs.RunState), lock the directory, resume from its checkpoint, train the
remaining epochs, record metrics.json and DONE.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

import hydra
import pandas as pd
import torch
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from asymbp import finetune, jobs, loggers, plugins, robustness, runs
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
from asymbp.data import DatasetError, Splits
from asymbp.engine import evaluate, train_epoch
from asymbp.evaluate import attack_runs
from asymbp.feedback import RULES
from asymbp.files import remove_stale_temps
from asymbp.layers import update_feedback_after_steps
from asymbp.metrics import backward_alignment, weight_alignment
from asymbp.registry import check_values

log = logging.getLogger("asymbp")
#: Errors that end a run with one line `asymbp-train: error: ...` (exit 2; 75 for RunBusy).
ONE_LINE_ERRORS = (ConfigError, DatasetError, runs.RunError)


def _register_searches() -> None:
    """hparams_search=<rule> for every rule: conf/hparams_search/_search.yaml (the one search
    config) with that rule chosen, stored in Hydra's ConfigStore under the rule's name."""
    store = ConfigStore.instance()
    for rule in RULES:
        node = {"defaults": ["_search", {"override /feedback": rule}, "_self_"]}
        store.store(group="hparams_search", name=rule, node=node, package="_global_")


_register_searches()

#: Config files whose name starts with this are parts the options of their group share (through
#: their `defaults`), not options: --help does not list them and the command line refuses them.
SHARED_PREFIX = "_"


def group_options() -> dict[str, list[str]]:
    """Every config group of conf/ (Hydra's own groups aside) and its options, shared parts left
    out; hparams_search's are the rules asymbp.train registers."""
    groups = {}
    for folder in sorted(p for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name != "hydra"):
        files = sorted(p.stem for p in folder.glob("*.yaml"))
        groups[folder.name] = [name for name in files if not name.startswith(SHARED_PREFIX)]
    groups["hparams_search"] = sorted(RULES)
    return groups


def _choices_text() -> str:
    """--help's list of groups and options (Hydra's own would list the shared parts too)."""
    return "\n".join(f"{group}: {', '.join(names)}" for group, names in group_options().items())


OmegaConf.register_new_resolver("asymbp.choices", _choices_text, replace=True)


def refuse_shared_parts(argv: list[str]) -> None:
    """Exit 2 with one line when the command line chooses a shared part (`dataset=_image_base`)
    as a group's option, before Hydra composes it into a traceback."""
    groups = group_options()
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = _key(arg), arg.split("=", 1)[1]
        shared = [v.strip() for v in value.split(",") if v.strip().startswith(SHARED_PREFIX)]
        if key in groups and shared:
            print(
                f"asymbp-train: error: {key}={shared[0]} is a part its options share, not an "
                f"option: choose {', '.join(groups[key])}",
                file=sys.stderr,
            )
            sys.exit(2)


class _RunLog(logging.FileHandler):
    """train.log; a write that fails (full disk) stops the run with a one-line RunError instead of
    logging's traceback on stderr."""

    def handleError(self, record):  # noqa: N802 - logging's name
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            raise runs.write_error(Path(self.baseFilename), error) from error
        super().handleError(record)


@contextlib.contextmanager
def _logging_to(run_dir: Path):
    """Log lines go to stderr and to the run directory's train.log for the duration of a run."""
    log.setLevel(logging.INFO)
    log.propagate = False
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    try:
        run_log = _RunLog(run_dir / runs.LOG)
    except OSError as error:
        raise runs.write_error(run_dir / runs.LOG, error) from error
    handlers = [logging.StreamHandler(sys.stderr), run_log]
    for handler in handlers:
        handler.setFormatter(fmt)
        log.addHandler(handler)
    try:
        yield
    finally:
        for handler in handlers:
            log.removeHandler(handler)
            handler.close()


def _alignment_columns(model, batch) -> dict[str, float]:
    columns = {}
    for per_layer in (weight_alignment(model), backward_alignment(model, *batch)):
        for layer, values in per_layer.items():
            for metric, value in values.items():
                columns[f"{metric}/{layer}"] = value
    return columns


def _final_metrics(cfg, history, diverged, wall_seconds, device) -> dict:
    return {
        **runs.result_metrics(history, diverged),
        "wall_seconds": wall_seconds,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        **runs.code_version(),
        "seed": cfg.seed,
        **{group: str(cfg[group].name) for group in GROUPS},
    }


def _json_safe(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _skipped(cfg: DictConfig, run_dir: Path, metrics: dict) -> dict:
    loggers.repair(cfg, run_dir)  # an MLflow run that a kill after the last epoch left RUNNING
    now = runs.code_version()
    then = {key: metrics.get(key) for key in now}
    if then != now:
        warnings.warn(
            f"{run_dir} was finished by asymbp {then['asymbp_version']} (commit "
            f"{then['git_commit']}), not this {now['asymbp_version']} (commit {now['git_commit']}):"
            " reused as it is; force=true reruns it",
            stacklevel=3,
        )
    print(f"skipped (already done): test_acc={metrics['test_acc']} run_dir={run_dir}")
    return metrics


def _fresh_state(
    cfg: DictConfig, splits: Splits, device: torch.device, source: Path | None = None
) -> runs.RunState:
    """Model, optimizer, scheduler and data order of a run's start, seeded by cfg.seed; the
    model's weights those of the `source` run (init_from) when there is one."""
    torch.manual_seed(cfg.seed)
    model = make_model(cfg, splits.input_shape, splits.num_classes).to(device)
    if source is not None:
        finetune.load_weights(model, source)
    optimizer = make_optimizer(cfg, model)
    update_feedback_after_steps(model, optimizer)  # weight mirror: V learns between steps
    scheduler = make_scheduler(cfg, optimizer)
    order = torch.Generator().manual_seed(cfg.seed)
    return runs.RunState(model, optimizer, scheduler, order, execution=_execution(cfg, device))


def _execution(cfg: DictConfig, device: torch.device) -> dict:
    return runs.execution(cfg.deterministic, device)


def _check_inputs(model: torch.nn.Module, splits: Splits, cfg: DictConfig) -> None:
    """One forward pass in eval mode (no state changes), so that a model that cannot take the
    dataset's inputs fails here, before anything is written, with a one-line error; and the
    values only the data and the model can check: a training subset with fewer samples than
    classes, batches of one sample for a model with BatchNorm."""
    if cfg.train_subset is not None and cfg.train_subset < splits.num_classes:
        raise ConfigError(
            f"train_subset={cfg.train_subset} is below the {splits.num_classes} classes of "
            f"dataset={cfg.dataset.name} (the stratified subset needs one sample of each): use "
            f"train_subset >= {splits.num_classes}"
        )
    batch_norm = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if batch_norm and cfg.batch_size < 2:
        raise ConfigError(
            f"batch_size={cfg.batch_size} with BatchNorm (norm={cfg.norm.name}, "
            f"model={cfg.model.name}): BatchNorm needs 2 or more samples per batch: use "
            "batch_size >= 2, or norm=none or bm"
        )
    model.eval()
    try:
        with torch.no_grad():
            model(splits.normalize(splits.train[0][:2]))
    except RuntimeError as error:
        message = str(error).splitlines()[0]
        raise ConfigError(
            f"model={cfg.model.name} cannot take the inputs of dataset={cfg.dataset.name} "
            f"(shape {tuple(splits.input_shape)}): {message}"
        ) from None


def run(
    cfg: DictConfig,
    out_dir: str | Path | None = None,
    *,
    on_epoch_end: Callable[[int], None] | None = None,
) -> dict:
    """Train one configuration into `out_dir` (default: its run directory) and return metrics.json.

    A finished run (DONE) is skipped; an interrupted one resumes from its last completed epoch.
    The config is checked, the data loaded and the model built before anything is written or
    removed (force=true included); the run directory is then locked (runs.RunBusy if another
    process holds it). `on_epoch_end(epoch)` is called after each epoch is saved (tests use it to
    interrupt a run). With `attack` chosen, the finished run is then attacked (asymbp.evaluate:
    what its robustness/ folder holds already is not computed again).
    """
    with _preemption_deferred() as after_checkpoint:
        metrics = _train_run(cfg, out_dir, _then(on_epoch_end, after_checkpoint))
    if robustness.enabled(cfg.get("attack")) and not metrics.get("diverged"):
        run_dir = Path(out_dir) if out_dir is not None else runs.run_directory(cfg)
        keys = {"device": cfg.device, "threads": cfg.threads}
        attack_runs([run_dir], cfg.attack, keys, train=run)
    return metrics


def _train_run(cfg: DictConfig, out_dir, on_epoch_end) -> dict:
    plugins.load(cfg.plugins)  # user code registering datasets and models
    validate(cfg)
    run_dir = Path(out_dir) if out_dir is not None else runs.run_directory(cfg)
    runs.check_writable(run_dir)
    if not cfg.force and (metrics := runs.finished_metrics(run_dir)) is not None:
        return _skipped(cfg, run_dir, metrics)

    source = finetune.prepare(cfg, run)  # init_from: the finished run to start from
    configure_torch(cfg)
    device = select_device(cfg.device)
    splits = Splits(cfg, device)
    if robustness.enabled(cfg.get("attack")):
        robustness.pixels(splits.test[0][:1])  # attacks need images: refused before training
    state = _fresh_state(cfg, splits, device, source)
    _check_inputs(state.model, splits, cfg)
    with runs.RunLock(run_dir):
        # Another process may have finished it while this one was loading the data.
        if not cfg.force and (metrics := runs.finished_metrics(run_dir)) is not None:
            return _skipped(cfg, run_dir, metrics)
        if cfg.force:
            runs.clear(run_dir)
        for name in (runs.DONE, runs.FAILED):  # a run under way is neither done nor failed
            (run_dir / name).unlink(missing_ok=True)
        stale = remove_stale_temps(run_dir)
        runs.write_text(run_dir / runs.CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
        with _logging_to(run_dir), loggers.open_logger(cfg, run_dir) as logger:
            if stale:
                log.info("removed stale temporary files: %s", ", ".join(p.name for p in stale))
            state = _resume(cfg, run_dir, splits, device, state, source)
            diverged = _train(cfg, run_dir, splits, state, on_epoch_end, logger)
            return _record(cfg, run_dir, state, diverged, device)


def _resume(cfg, run_dir, splits, device, state: runs.RunState, source=None) -> runs.RunState:
    """The state from the run's checkpoint, or `state` (a fresh start) when there is none; a
    fresh start again when the checkpoint does not fit this model (a warning says why).

    A resumed run keeps the thread count it started with (it changes the last bits of the
    results) and warns when it resumes on another device, torch or asymbp version."""
    now = state.execution
    checkpoint = runs.load_checkpoint(run_dir / runs.CHECKPOINT)
    if checkpoint is None:
        return state
    try:
        state.restore(checkpoint)
    except (RuntimeError, ValueError, KeyError, TypeError) as error:
        reason = str(error).splitlines()[0]
        warnings.warn(
            f"checkpoint {run_dir / runs.CHECKPOINT} does not fit this run ({reason}); "
            "starting over",
            stacklevel=2,
        )
        log.info("checkpoint does not fit (%s): starting over", reason)
        return _fresh_state(cfg, splits, device, source)
    started = state.execution
    if started.get("threads") and started["threads"] != now["threads"]:
        log.info("resuming with the %d threads the run started with", started["threads"])
        torch.set_num_threads(started["threads"])
        now["threads"] = started["threads"]
    differs = {
        key: (started.get(key), value) for key, value in now.items() if started.get(key) != value
    }
    if differs:
        text = ", ".join(f"{key} {a} -> {b}" for key, (a, b) in differs.items())
        warnings.warn(f"{run_dir} resumes across versions or settings: {text}", stacklevel=2)
        log.info("resuming across versions or settings: %s", text)
    state.execution = started or now
    log.info("resuming %s after epoch %d", run_dir, len(state.history))
    return state


def _train(cfg, run_dir, splits, state: runs.RunState, on_epoch_end, logger) -> bool:
    """The epochs after the state's history, each saved (history.csv, the logger, the
    checkpoint) before the next; True when the run diverged."""
    log.info("%s", splits.description)
    n_align = min(cfg.alignment_batch, splits.train[1].numel())
    align_batch = (splits.normalize(splits.train[0][:n_align]), splits.train[1][:n_align])
    progress = sys.stderr.isatty() if cfg.progress == "auto" else bool(cfg.progress)
    eval_args = (splits.normalize, cfg.eval_batch_size, cfg.precision)
    model, optimizer = state.model, state.optimizer

    for epoch in range(len(state.history) + 1, cfg.epochs + 1):
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        result = train_epoch(
            model, optimizer, *splits.train, splits.normalize, cfg.batch_size, state.order,
            cfg.divergence_loss, progress=progress, description=f"epoch {epoch}/{cfg.epochs}",
            precision=cfg.precision,
        )  # fmt: skip
        state.scheduler.step()
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
        state.wall_seconds += row["seconds"]
        state.history.append(row)
        log.info(
            "epoch %d/%d loss %.4f train %.4f val %.4f test %.4f (%.1fs)%s",
            epoch, cfg.epochs, row["train_loss"], row["train_acc"], row["val_acc"],
            row["test_acc"], row["seconds"], " DIVERGED" if result.diverged else "",
        )  # fmt: skip
        with _ctrl_c_deferred():  # history.csv and the checkpoint always hold the same epochs
            _write_history(run_dir, state.history)
            logger.log_epoch(row)
            if result.diverged:
                return True
            runs.save_checkpoint(run_dir / runs.CHECKPOINT, state.checkpoint())
        if on_epoch_end is not None:
            on_epoch_end(epoch)
    return False


def _record(cfg, run_dir, state: runs.RunState, diverged: bool, device) -> dict:
    """metrics.json, then DONE: the run is finished."""
    metrics = _final_metrics(cfg, state.history, diverged, state.wall_seconds, device)
    runs.write_json(run_dir / runs.METRICS, {k: _json_safe(v) for k, v in metrics.items()})
    runs.write_text(run_dir / runs.DONE, "")
    log.info("done: test_acc=%.4f diverged=%s", metrics["test_acc"], diverged)
    print(f"test_acc={metrics['test_acc']:.4f} diverged={diverged} run_dir={run_dir}")
    return metrics


@contextlib.contextmanager
def _ctrl_c_deferred():
    """Ctrl-C (SIGINT) pressed inside the block takes effect when it ends, so that an epoch's
    files are written together or not at all. Outside the main thread: no change."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed = []
    previous = signal.signal(signal.SIGINT, lambda *_: pressed.append(True))
    previous = signal.default_int_handler if previous is None else previous
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:
        raise KeyboardInterrupt


def _then(first: Callable[[int], None] | None, second: Callable[[int], None]):
    def both(epoch: int) -> None:
        if first is not None:
            first(epoch)
        second(epoch)

    return both


@contextlib.contextmanager
def _preemption_deferred():
    """In a submitit job (hydra/launcher=slurm, submitit_local), submitit's preemption/timeout
    signal (USR2, sent `signal_delay_s` before the end) takes effect after the next epoch's
    checkpoint: submitit's own handler then requeues the job, which resumes from that epoch.
    Yields what the training loop calls after each saved epoch; a run trained inside another's
    (init_from's source) shares the outer one's. Elsewhere: no change."""
    sig = _submitit_signal()
    previous = signal.getsignal(sig) if sig is not None else None
    if not callable(previous) or threading.current_thread() is not threading.main_thread():
        yield lambda epoch: None
        return
    if hasattr(previous, "after_checkpoint"):  # nested: the outer run's deferral is in place
        yield previous.after_checkpoint
        return
    received = []

    def receive(signum, frame):
        received.append((signum, frame))
        log.warning("preemption signal %s: the run stops after this epoch's checkpoint", signum)

    def after_checkpoint(epoch: int) -> None:
        if received:
            log.warning("epoch %d saved: handing the job to submitit to requeue", epoch)
            signal.signal(sig, previous)
            previous(*received[0])  # requeues: exits the process (or raises, out of requeues)

    receive.after_checkpoint = after_checkpoint
    signal.signal(sig, receive)
    try:
        yield after_checkpoint
    finally:
        signal.signal(sig, previous)
    if received:
        log.warning("the run finished before its next checkpoint: the job is not requeued")


def _submitit_signal():
    """submitit's preemption signal when this process is a submitit job, else None."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    try:
        from submitit import JobEnvironment
    except ImportError:
        return None
    return JobEnvironment._usr_sig()


def _write_history(run_dir: Path, history: list[dict]) -> None:
    first = ["epoch", "train_loss", "train_acc", "val_acc", "test_acc", "lr", "seconds"]
    frame = pd.DataFrame(history)
    # Alignment columns keep the model's layer order (input to output), metric by metric.
    columns = first + [c for c in frame.columns if c not in first]
    runs.write_text(run_dir / runs.HISTORY, frame[columns].to_csv(index=False))


def _record_failure(cfg: DictConfig, line: str) -> None:
    """FAILED (and config.yaml) in the failed job's run directory, when it can be named."""
    try:
        run_dir = runs.run_directory(cfg)
        config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    except Exception:  # an unresolvable config has no run directory to record it in
        return
    runs.write_failed(run_dir, line, config_yaml)


def _dry_run(cfg: DictConfig) -> float:
    """dry_run=true: check the config, print what running it would do, train nothing."""
    try:
        validate(cfg)
        run_dir = runs.run_directory(cfg)
    except ONE_LINE_ERRORS as error:
        print(f"asymbp-train: error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"{runs.status(run_dir):<10} {run_dir}")
    return 0.0


def objective(metrics: dict) -> float:
    """What a sweeper that optimizes (hparams_search: Optuna) maximizes: the best validation
    accuracy; 0.0 for a diverged run or one without a validation split."""
    value = metrics.get("best_val_acc")
    finite = isinstance(value, int | float) and math.isfinite(value)
    return float(value) if finite and not metrics.get("diverged") else 0.0


def _key(arg: str) -> str:
    return arg.split("=", 1)[0].lstrip("+~")


#: The sweeper of hparams_search=<rule>: hydra_plugins/asymbp_sweeper/optuna_sweeper.py.
SEARCH_SWEEPER = "asymbp_optuna"


def with_search_sweeper(argv: list[str]) -> list[str]:
    """`argv` plus hydra/sweeper=asymbp_optuna when it chooses hparams_search and no sweeper:
    Hydra keeps the primary config's sweeper (asymbp's arms) over the one a search config names,
    so a search named alone would reach the arms sweeper with Optuna's keys."""
    search = any(_key(a) == "hparams_search" and not a.endswith("=null") for a in argv)
    if search and not any(_key(a) == "hydra/sweeper" for a in argv):
        return [*argv, f"hydra/sweeper={SEARCH_SWEEPER}"]
    return argv


def check_search_numbers(argv: list[str]) -> None:
    """Exit 2 with one line when the command line gives a search's number (jobs.SEARCH_KEYS:
    hydra.sweeper.n_trials, ...) a value of the wrong type or range, before Hydra composes it
    (OmegaConf's typed sweeper config would refuse some in several lines, accept others)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for arg in argv:
        name = _key(arg).removeprefix("hydra.sweeper.")
        if "=" not in arg or name not in jobs.SEARCH_KEYS or name == _key(arg):
            continue
        try:
            value = parser.parse_override(arg).value()
            check_values("hydra.sweeper", {name: value}, jobs.SEARCH_KEYS)
        except (ConfigError, HydraException) as error:
            print(f"asymbp-train: error: {str(error).splitlines()[0]}", file=sys.stderr)
            sys.exit(2)


def main() -> None:
    """asymbp-train: the command line checked for shared parts and a search's numbers, given
    asymbp's Optuna sweeper when it names a search, then Hydra's app."""
    refuse_shared_parts(sys.argv[1:])
    check_search_numbers(sys.argv[1:])
    sys.argv[1:] = with_search_sweeper(sys.argv[1:])
    hydra_main()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def hydra_main(cfg: DictConfig) -> float:
    sweep = jobs.in_sweep()
    if sweep:
        jobs.end_with_parent()
        cfg.device = jobs.job_device(cfg.device)  # several GPUs: shared round-robin
    if cfg.threads is None:
        cfg.threads = jobs.launcher_threads()
    if cfg.dry_run:  # a single run's (a sweep's are listed by the sweeper, without launching)
        return _dry_run(cfg)
    try:
        metrics = run(cfg)
    except ONE_LINE_ERRORS as error:
        busy = isinstance(error, runs.RunBusy)
        print(f"asymbp-train: {'' if busy else 'error: '}{error}", file=sys.stderr, flush=True)
        if not sweep:
            sys.exit(jobs.EXIT_BUSY if busy else 2)
        if not busy:
            _record_failure(cfg, str(error))
        raise jobs.JobFailed(str(error), busy=busy) from None
    except KeyboardInterrupt:
        if sweep:
            raise  # the sweeper reports it once for the whole sweep
        print(
            "asymbp-train: interrupted; run the same command again to resume from the last "
            "completed epoch",
            file=sys.stderr,
        )
        sys.exit(jobs.EXIT_INTERRUPTED)
    except Exception as error:
        if not sweep:
            raise
        traceback.print_exc()  # a bug, not bad input: the traceback, then the sweep goes on
        line = f"{type(error).__name__}: {error}".splitlines()[0]
        _record_failure(cfg, line)
        raise jobs.JobFailed(line) from None
    return objective(metrics)


if __name__ == "__main__":
    main()

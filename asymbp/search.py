"""The implementation of the `asymbp_optuna` sweeper (what it does: its plugin module,
hydra_plugins/asymbp_sweeper/optuna_sweeper.py): hydra-optuna-sweeper's OptunaSweeperImpl with
asymbp's sweep loop. Imported only when a search runs (it imports optuna), never by Hydra's
plugin scan.
"""

import contextlib
import fcntl
import os
import signal
import socket
import sys
import threading
from pathlib import Path

import numpy as np
import optuna
from hydra.core.utils import JobStatus
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from omegaconf import OmegaConf

from asymbp import jobs
from asymbp.config import ConfigError
from asymbp.registry import check_values

#: The trial's user attribute naming the process that runs it: "host:pid".
PROCESS_ATTR = "asymbp.process"
#: The user attribute of a trial that failed because its run directory was busy.
BUSY_ATTR = "asymbp.busy"


def _process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def fail_dead_trials(study, say) -> list:
    """Mark FAIL the RUNNING trials that a process of this machine, now gone, left; returns
    their numbers. Trials of other machines are left alone: they may still run."""
    host = socket.gethostname()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = str(trial.user_attrs.get(PROCESS_ATTR, ""))
        owner_host, _, pid = owner.rpartition(":")
        if owner_host == host and pid.isdigit() and not _alive(int(pid)):
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            failed.append(trial.number)
            say(
                f"asymbp-train: trial {trial.number} was left RUNNING by process {pid}, which has "
                "ended: marked FAIL"
            )
    return failed


def reseed(sampler, seed: int | None) -> None:
    """Seed `sampler`'s random generators (TPE's and its startup random sampler's) with `seed`;
    nothing for a sampler without a seed (it draws from fresh entropy anyway)."""
    if seed is None:
        return
    for holder in (sampler, getattr(sampler, "_random_sampler", None)):
        if holder is not None and isinstance(getattr(holder, "_rng", None), np.random.RandomState):
            holder._rng = np.random.RandomState(seed % 2**32)


@contextlib.contextmanager
def _storage_lock(storage):
    """An exclusive lock beside a sqlite study (`<db>.lock`) for the block, its folder created
    (the sweep folder, which Hydra makes only later); nothing for other storages (a database
    server orders its own writes)."""
    url = str(storage or "")
    if not url.startswith("sqlite:///"):
        yield
        return
    database = Path(url[len("sqlite:///") :])
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{database}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (a scheduler's, kill's) ends the search as Ctrl-C does, in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(*_):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class AsymbpOptunaSweeperImpl(OptunaSweeperImpl):
    def __init__(self, *args, max_failures: int | None = 3, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        values = {"max_failures": max_failures, "n_trials": self.n_trials, "n_jobs": self.n_jobs}
        try:  # a search config's own values (the command line's are checked by asymbp-train)
            check_values("hydra.sweeper", values, jobs.SEARCH_KEYS)
        except ConfigError as error:
            self._say(f"asymbp-train: error: {error}")
            sys.exit(2)
        self.max_failures = max_failures

    def _say(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def sweep(self, arguments: list[str]) -> None:
        if self.config.get("dry_run"):
            self._say(
                "asymbp-train: error: dry_run=true: a search has no list of jobs to show (its "
                "proposals depend on its results); leave dry_run out"
            )
            sys.exit(2)
        os.environ[jobs.SWEEP_PID_ENV] = str(os.getpid())  # workers end when this process does
        self._process_searchspace_config()
        space, fixed = create_params_from_overrides(
            [*self._parse_sweeper_params_config(), *arguments]
        )
        space = {**(self.search_space_distributions or {}), **space}
        for name in fixed:
            space.pop(name, None)
        with _storage_lock(self.storage):  # two searches would race to make its tables
            study = optuna.create_study(
                study_name=self.study_name, storage=self.storage, sampler=self.sampler,
                directions=self._get_directions(), load_if_exists=True,
            )  # fmt: skip
        fail_dead_trials(study, self._say)
        seed = OmegaConf.select(self.config, "hydra.sweeper.sampler.seed")
        reseed(self.sampler, None if seed is None else seed + len(study.trials))
        failures, to_go = 0, self.n_trials
        with _sigterm_as_interrupt():
            while to_go > 0:
                trials = [study.ask() for _ in range(min(to_go, max(1, self.n_jobs)))]
                for trial in trials:
                    trial.set_user_attr(PROCESS_ATTR, _process())
                try:
                    overrides = self._configure_trials(trials, space, fixed)
                    returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
                except KeyboardInterrupt:
                    for trial in trials:
                        study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    numbers = ", ".join(str(t.number) for t in trials)
                    self._say(
                        f"asymbp-train: search interrupted: trial {numbers} marked FAIL; run "
                        "the same command again to go on (finished runs are reused)"
                    )
                    sys.exit(jobs.EXIT_INTERRUPTED)
                self.job_idx += len(returns)
                failures += self._record(study, trials, returns)
                to_go -= len(trials)
                if self.max_failures is not None and failures >= self.max_failures:
                    self._say(
                        f"asymbp-train: search stopped: {failures} trials failed (each printed "
                        "its error; hydra.sweeper.max_failures sets the budget)"
                    )
                    sys.exit(1)
        self._write_results(study)

    def _record(self, study, trials, returns) -> int:
        """Tell the study each trial's result; returns how many count as failures."""
        failures = 0
        for trial, result in zip(trials, returns, strict=True):
            if result.status == JobStatus.COMPLETED:
                study.tell(trial, values=[float(result.return_value)])
                continue
            error = result._return_value
            busy = isinstance(error, jobs.JobFailed) and error.busy
            if busy:
                trial.set_user_attr(BUSY_ATTR, True)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            failures += not busy
            self._say(f"asymbp-train: trial {trial.number} failed: {error}")
        return failures

    def _write_results(self, study) -> None:
        complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        if not complete:
            return
        best = study.best_trial
        OmegaConf.save(
            OmegaConf.create(
                {"name": "optuna", "best_params": best.params, "best_value": best.value}
            ),
            f"{self.config.hydra.sweep.dir}/optimization_results.yaml",
        )



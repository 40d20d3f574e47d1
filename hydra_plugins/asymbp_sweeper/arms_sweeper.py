"""The `arms` sweeper: Hydra's basic sweeper over a union of cartesian products.

A sweep such as "sc at five concordances, plus rndf as a reference" is not one cartesian product:
rndf has no concordance. Each arm is a product of its own (arm keys on top of `params`, command-line
overrides on top of both); the jobs are the union of the arms, without duplicates. With no arms it
is exactly the basic sweeper, so it serves as asymbp's default sweeper. Unlike the basic sweeper,
a failed job does not stop the sweep: all jobs run, then the sweep exits non-zero listing the
failures.

    hydra:
      sweeper:
        params: {seed: 0,1,2}
        arms:
          sign_concordance: {feedback: sc, feedback.concordance: "0,0.5,1.0"}
          random_feedback: {feedback: rndf}
"""

# No `from __future__ import annotations`: Hydra executes plugin modules outside sys.modules, where
# dataclasses cannot resolve string annotations, and OmegaConf needs the real types.
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple  # noqa: UP035 - OmegaConf reads these types

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobStatus
from omegaconf import OmegaConf


@dataclass
class ArmsSweeperConf:
    _target_: str = "hydra_plugins.asymbp_sweeper.arms_sweeper.ArmsSweeper"
    max_batch_size: Optional[int] = None  # noqa: UP045
    params: Optional[Dict[str, str]] = None  # noqa: UP006, UP045
    arms: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # noqa: UP006


ConfigStore.instance().store(
    group="hydra/sweeper", name="arms", node=ArmsSweeperConf, provider="asymbp"
)


class _FailureRecorder:
    """Wraps the launcher: failed jobs are collected instead of ending the sweep (the basic
    sweeper raises the first failure it reads, after its batch, and no later batch runs)."""

    def __init__(self, launcher) -> None:
        self.launcher = launcher
        self.failed: List[Tuple[List[str], BaseException]] = []  # noqa: UP006

    def launch(self, job_overrides, initial_job_idx):
        results = self.launcher.launch(job_overrides, initial_job_idx=initial_job_idx)
        for result in results:
            if result.status == JobStatus.FAILED:
                self.failed.append((list(result.overrides), result._return_value))
                # Counted here; marked done so that the basic sweeper goes on to the next batch.
                result.status, result._return_value = JobStatus.COMPLETED, None
        return results

    def __getattr__(self, name):
        return getattr(self.launcher, name)


class ArmsSweeper(BasicSweeper):
    def __init__(self, max_batch_size=None, params=None, arms=None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.arms = dict(arms or {})
        self._command_line: List[str] = []  # noqa: UP006

    def sweep(self, arguments: list[str]) -> Any:
        """Every job runs even when some fail; then a failure ends the sweep with exit status 1,
        listing the failed jobs (each printed its one-line error when it failed). Ctrl-C ends it
        with one line and status 130."""
        from asymbp import jobs  # imported here: Hydra imports plugins in every Hydra app

        self._command_line = list(arguments)
        if self.config.get("dry_run"):
            return self._dry_run(arguments)
        os.environ[jobs.SWEEP_PID_ENV] = str(os.getpid())  # workers end when this process does
        self.launcher = _FailureRecorder(self.launcher)
        try:
            returns = super().sweep(arguments)
        except KeyboardInterrupt:
            print(
                "asymbp-train: sweep interrupted; run the same command again: finished runs are "
                "skipped, interrupted ones resume",
                file=sys.stderr,
            )
            sys.exit(jobs.EXIT_INTERRUPTED)
        failed = self.launcher.failed
        if failed:
            total = sum(len(batch) for batch in returns)
            print(f"asymbp-train: {len(failed)} of {total} jobs failed:", file=sys.stderr)
            for overrides, error in failed:
                print(f"  {' '.join(overrides)}: {error}", file=sys.stderr)
            jobs.sweep_report(self.config)  # Hydra's on_multirun_end does not run after an exit
            sys.exit(1)
        return returns

    def _dry_run(self, arguments: list[str]) -> list:
        """dry_run=true: each job's run directory and what running it would do (finished,
        failed, resumable, new), composed as the launcher would; nothing launched or written."""
        from asymbp import runs

        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        batches = self.split_arguments(parser.parse_overrides(arguments), None)
        counts: Dict[str, int] = {}  # noqa: UP006
        for overrides in (job for batch in batches for job in batch):
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            cfg = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
            try:
                run_dir = runs.run_directory(cfg)
                state = runs.status(run_dir)
            except Exception as error:  # a job whose config cannot name its directory
                run_dir, state = f"({str(error).splitlines()[0]})", "error"
            counts[state] = counts.get(state, 0) + 1
            print(f"{state:<10} {run_dir}   {' '.join(overrides)}")
        summary = ", ".join(f"{n} {state}" for state, n in counts.items())
        print(f"{sum(counts.values())} jobs: {summary} (dry run: nothing launched)")
        return []

    def split_arguments(self, overrides, max_batch_size):  # replaces the basic sweeper's product
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        jobs: List[List[str]] = []  # noqa: UP006
        for arm in self.arms.values() or [{}]:
            texts = self._parse_config() + [f"{k}={v}" for k, v in arm.items()] + self._command_line
            for job in BasicSweeper.split_arguments(parser.parse_overrides(texts), None)[0]:
                if job not in jobs:
                    jobs.append(job)
        return list(BasicSweeper.split_overrides_to_chunks(jobs, max_batch_size))

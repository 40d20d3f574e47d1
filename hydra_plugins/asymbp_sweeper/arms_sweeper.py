"""The `arms` sweeper: Hydra's basic sweeper over a union of cartesian products.

A sweep such as "sc at five concordances, plus rndf as a reference" is not one cartesian product:
rndf has no concordance. Each arm is a product of its own (arm keys on top of `params`, command-line
overrides on top of both); the jobs are the union of the arms, without duplicates. With no arms it
is exactly the basic sweeper, so it serves as asymbp's default sweeper.

    hydra:
      sweeper:
        params: {seed: 0,1,2}
        arms:
          sign_concordance: {feedback: sc, feedback.concordance: "0,0.5,1.0"}
          random_feedback: {feedback: rndf}
"""

# No `from __future__ import annotations`: Hydra executes plugin modules outside sys.modules, where
# dataclasses cannot resolve string annotations, and OmegaConf needs the real types.
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional  # noqa: UP035 - OmegaConf reads these types

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser


@dataclass
class ArmsSweeperConf:
    _target_: str = "hydra_plugins.asymbp_sweeper.arms_sweeper.ArmsSweeper"
    max_batch_size: Optional[int] = None  # noqa: UP045
    params: Optional[Dict[str, str]] = None  # noqa: UP006, UP045
    arms: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # noqa: UP006


ConfigStore.instance().store(
    group="hydra/sweeper", name="arms", node=ArmsSweeperConf, provider="asymbp"
)


class ArmsSweeper(BasicSweeper):
    def __init__(self, max_batch_size=None, params=None, arms=None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.arms = dict(arms or {})
        self._command_line: List[str] = []  # noqa: UP006

    def sweep(self, arguments: list[str]) -> Any:
        self._command_line = list(arguments)
        return super().sweep(arguments)

    def split_arguments(self, overrides, max_batch_size):  # replaces the basic sweeper's product
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        jobs: List[List[str]] = []  # noqa: UP006
        for arm in self.arms.values() or [{}]:
            texts = self._parse_config() + [f"{k}={v}" for k, v in arm.items()] + self._command_line
            for job in BasicSweeper.split_arguments(parser.parse_overrides(texts), None)[0]:
                if job not in jobs:
                    jobs.append(job)
        return list(BasicSweeper.split_overrides_to_chunks(jobs, max_batch_size))

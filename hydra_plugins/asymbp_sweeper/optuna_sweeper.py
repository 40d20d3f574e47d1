"""The `asymbp_optuna` sweeper: hydra-optuna-sweeper's search, made to survive what users do.

asymbp-train chooses it for `hparams_search=<rule>` (conf/hparams_search/_search.yaml). Its
search space, sampler, storage and study are hydra-optuna-sweeper's (`hydra.sweeper.*`); what
it changes:

- a trial that fails (its run's one-line error) is recorded FAIL and the search goes on; the
  search stops, exit 1, after `max_failures` failed trials in one invocation (null: never). A
  trial whose run directory another process is training (two searches, one study) is FAIL too,
  without counting against that budget;
- the same command again continues the stored study with `n_trials` more trials and new
  proposals: the sampler is seeded with its seed plus the number of trials the study holds
  (hydra-optuna-sweeper reseeds it the same way every time, so a rerun replays its proposals);
- Ctrl-C or SIGTERM marks the trials under way FAIL and ends the search with one line, exit
  130; a trial that a process now dead left RUNNING on this machine is marked FAIL when the
  next search on the study starts;
- the search's workers (joblib, submitit-local) end when its process does, as a grid sweep's.
"""

# No `from __future__ import annotations`: Hydra executes plugin modules outside sys.modules, where
# dataclasses cannot resolve string annotations, and OmegaConf needs the real types.
from dataclasses import dataclass
from typing import Any, Optional  # noqa: UP035 - OmegaConf reads these types

from hydra.core.config_store import ConfigStore

try:  # the optional extra asymbp[optuna]; without it this module registers nothing
    from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
except ImportError:
    OptunaSweeperConf = OptunaSweeper = None

if OptunaSweeper is not None:

    @dataclass
    class AsymbpOptunaSweeperConf(OptunaSweeperConf):
        _target_: str = "hydra_plugins.asymbp_sweeper.optuna_sweeper.AsymbpOptunaSweeper"
        max_failures: Optional[int] = 3  # noqa: UP045

    ConfigStore.instance().store(
        group="hydra/sweeper", name="asymbp_optuna", node=AsymbpOptunaSweeperConf,
        provider="asymbp",
    )

    class AsymbpOptunaSweeper(OptunaSweeper):
        """hydra-optuna-sweeper's sweeper running asymbp.search's implementation (imported
        here, when a search is built: it imports optuna)."""

        def __init__(self, max_failures: Optional[Any] = 3, **kwargs) -> None:  # noqa: UP045
            from asymbp.search import AsymbpOptunaSweeperImpl

            keys = (
                "sampler", "direction", "storage", "study_name", "n_trials", "n_jobs",
                "max_failure_rate", "search_space", "custom_search_space", "params",
            )  # fmt: skip
            self.sweeper = AsymbpOptunaSweeperImpl(
                *(kwargs.get(key) for key in keys), max_failures=max_failures
            )

"""Where asymbp's Hydra configs live, and the config groups that describe a run."""

from __future__ import annotations

from pathlib import Path

#: The repository's conf/ (an absolute path: Hydra reads a relative one as a Python package).
CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"
#: The config groups a run chooses one option of (also the columns naming a run's condition).
GROUPS = ("dataset", "model", "feedback", "norm", "optimizer")

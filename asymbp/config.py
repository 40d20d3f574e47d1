"""Where the shipped configs live and the names of their groups (the one home of both)."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
#: The conf/ folder, as an absolute path (Hydra reads a relative one as a Python package).
#: An installed wheel carries it as asymbp/conf (setup.py maps the repository's top-level conf/
#: there); a source checkout, editable install included, reads the repository's conf/ itself.
CONFIG_DIR = _PACKAGE / "conf" if (_PACKAGE / "conf").is_dir() else _PACKAGE.parent / "conf"
#: The config groups that choose what a run computes, in the order tables and run names use.
GROUPS = ("dataset", "model", "feedback", "norm", "optimizer")

"""User code that registers datasets and models with asymbp, loaded before a run is built.

Two ways in, both ending in `asymbp.data.register_dataset` / `asymbp.models.register_model`
decorators that run when the user's module is imported:
  - the config key `plugins: [mylab, ...]`: modules imported by name (the current folder is
    searched too, as `python -m` does, so a project folder works without installing it);
  - the entry-point group `asymbp.plugins` of an installed package: every entry point in it is
    loaded, so `pip install` of the package is all a user needs.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable
from importlib.metadata import entry_points

from asymbp.config import ConfigError

ENTRY_POINT_GROUP = "asymbp.plugins"


def load(modules: Iterable[str]) -> None:
    """Load every `asymbp.plugins` entry point, then import `modules` (the `plugins` key)."""
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry.load()
        except ImportError as error:
            dist = entry.dist.name if entry.dist else "an installed package"
            raise ConfigError(
                f"entry point {entry.name!r} = {entry.value!r} of {dist} (group "
                f"{ENTRY_POINT_GROUP}) cannot be imported: {error}; reinstall or uninstall it"
            ) from error
    modules = list(modules)
    if modules and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name is None or not (name == error.name or name.startswith(error.name + ".")):
                raise  # the plugin was found but itself imports something missing
            raise ConfigError(
                f"plugins: cannot import {name!r} ({error}); run from the folder that holds it, "
                "add that folder to PYTHONPATH, or pip install its package"
            ) from error

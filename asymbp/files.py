"""Atomic file writes shared by run directories and the dataset cache.

A file is written to a temporary file in its folder, then renamed over its name (`os.replace`), so a
reader never sees half a file. The temporary name says whose it is, `.<name>.asymbp-<host>-<pid>-
<random>.tmp`, so that a file left by a killed writer is provably stale (same host, process gone)
and `remove_stale_temps` can delete it. Files get the permissions an ordinary `open()` would give
(0666 minus the umask), not mkstemp's 0600, so a group sharing a results folder can read them.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TEMP_TAG = "asymbp"
_TEMP_NAME = re.compile(rf"^\..+\.{TEMP_TAG}-(?P<host>.+)-(?P<pid>\d+)-[a-z0-9_]+\.tmp$")


def _host() -> str:
    return socket.gethostname().replace(os.sep, "_") or "localhost"


def umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(path: str | os.PathLike) -> None:
    """Give `path` the mode open() gives a new file: 0666 minus the umask."""
    os.chmod(path, 0o666 & ~umask())


def atomic_write(path: Path, write: Callable[[BinaryIO], None], *, fsync: bool = True) -> None:
    """Call `write(handle)` on a temporary file next to `path`, then rename it to `path`.

    fsync=True flushes the data to disk before the rename: a power loss leaves the old file or the
    new one. On any error (or Ctrl-C) the temporary file is removed and the error propagates.
    """
    prefix = f".{path.name}.{TEMP_TAG}-{_host()}-{os.getpid()}-"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        follow_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user holds that pid
        return True
    return True


def remove_stale_temps(folder: Path, name: str | None = None) -> list[Path]:
    """Delete the temporary files in `folder` (of file `name` only, if given) whose writer was a
    process of this host that no longer exists; return what was deleted. Others' files are kept."""
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if match is None or (name is not None and not entry.name.startswith(f".{name}.")):
            continue
        if match["host"] != _host() or _alive(int(match["pid"])):
            continue
        try:
            entry.unlink()
            removed.append(entry)
        except FileNotFoundError:  # another process cleaned it up first
            pass
    return removed

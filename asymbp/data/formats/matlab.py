"""MATLAB .mat files (SVHN's arrays, the Oxford flowers' split and label files), read with scipy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from asymbp.data.layout import Layout


def read_mat(layout: Layout, path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The variables `keys` of a .mat file; a DatasetError naming the file when it is unreadable
    or lacks one of them."""
    try:
        content = scipy.io.loadmat(path, variable_names=keys)
    # scipy raises many types for a damaged file (ValueError, MatReadError, zlib.error, ...);
    # every one of them means the same to the user: this file is corrupt.
    except Exception as error:
        raise layout.corrupt(path, f"cannot read it as a MATLAB file ({error})") from None
    missing = [key for key in keys if key not in content]
    if missing:
        found = sorted(key for key in content if not key.startswith("__"))
        raise layout.corrupt(path, f"has no variable {missing[0]!r} (it holds {found})")
    return {key: np.asarray(content[key]) for key in keys}

"""Where a dataset's files are expected, and the one-line errors when they are missing or corrupt.

Every message starts with the dataset's name and ends with where to get the files, so that
`asymbp-train: error: ...` alone tells the user what to do.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from asymbp.data.base import DatasetError


class DatasetWarning(UserWarning):
    """A dataset loaded, but with a caveat (skipped unreadable images, a rebuilt cache file)."""


@dataclass(frozen=True)
class Layout:
    """The files a dataset needs under its root folder, and the official page to get them from.

    expected: paths relative to the root (files or folders) that must exist.
    contents: what the root holds, for messages (default: the expected paths).
    download: dataset.download=true can fetch them (the dataset has a torchvision class).
    """

    dataset: str
    url: str
    expected: tuple[str, ...] = ()
    contents: str = ""
    download: bool = False

    @property
    def hint(self) -> str:
        fetch = " or set dataset.download=true" if self.download else ""
        return f"get them from {self.url}{fetch}"

    def missing(self, root: str | os.PathLike, problem: str) -> DatasetError:
        """Files absent: names the path, the files expected there and where to get them."""
        return DatasetError(
            f"{self.dataset}: {problem}; expected "
            f"{self.contents or ', '.join(self.expected)} under {root}; {self.hint}"
        )

    def corrupt(self, path: str | os.PathLike, problem: str) -> DatasetError:
        """A file that exists but cannot be decoded: names the file."""
        return DatasetError(f"{self.dataset}: {path}: {problem}; {self.hint}")

    def check(self, root: str | os.PathLike | None) -> Path:
        """The root as an absolute path, once every expected path exists under it."""
        if root is None:
            raise self.missing("dataset.root", "no dataset.root given")
        root = Path(root).expanduser().absolute()
        if not root.is_dir():
            raise self.missing(root, f"no such directory {root}")
        for relative in self.expected:
            if not (root / relative).exists():
                raise self.missing(root, f"no {relative} in {root}")
        return root

    def present(self, root: str | os.PathLike) -> bool:
        """Every expected path exists under root."""
        return all((Path(root) / relative).exists() for relative in self.expected)


def fetch(
    layout: Layout,
    root,
    download: bool,
    get: Callable[[Path], object],
    present: Callable[[Path], bool] | None = None,
) -> Path:
    """Layout.check(root), after get(root) downloaded the files when download is true and they
    are missing (get: e.g. a torchvision class called with download=True).

    present: whether the files are there (default: Layout.present).
    """
    if root is not None and download:
        root = Path(root).expanduser().absolute()
        if not (present or layout.present)(root):
            root.mkdir(parents=True, exist_ok=True)
            try:
                get(root)
            # Network errors, md5 mismatches, broken archives: any of them means the same.
            except Exception as error:
                raise DatasetError(
                    f"{layout.dataset}: downloading into {root} failed "
                    f"({type(error).__name__}: {error}); {layout.hint}"
                ) from None
    return layout.check(root)

"""SUFR-W (Leibo, Liao & Poggio 2014), "SUFR in the wild", as SUFR_ver1.3 ships it: a flat folder
SUFR_in_the_wild/ of <n>.jpg and the identity of the person in each image. N-way identification
of its 400 people; its protocol is pair verification, so the split is a seeded rule."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from asymbp.data.base import InMemoryDataset
from asymbp.data.decode import Decoding
from asymbp.data.formats.matlab import read_mat
from asymbp.data.layout import Layout
from asymbp.data.pipeline import load_by_rule, require_listed
from asymbp.data.registry import register_dataset
from asymbp.data.splits import SplitRule
from asymbp.registry import OpenFraction, PositiveInt, Seed

#: SUFR_ver1.3's README (Leibo, Liao & Poggio; klab.tch.harvard.edu/cbmm/other/SUFR_README.txt):
#: SUFR-W is SUFR_in_the_wild/ with the images and SUFR_in_the_wild_info.mat/.txt, the id and
#: name of the person in each image (ids 1 to 400). Image <n>.jpg is the n-th line of the .txt.
SUFRW = Layout(
    "sufrw",
    "http://cbmm.mit.edu/resources/data-sets (SUFR_ver1.3, Leibo, Liao & Poggio 2014)",
    contents="SUFR_in_the_wild/ with <n>.jpg and SUFR_in_the_wild_info.txt (or .mat)",
)
SUFRW_FOLDER = "SUFR_in_the_wild"


def _sufrw_identities(folder: Path) -> tuple[list[int], list[str]]:
    """(person id, person name) of image 1, 2, ...: SUFR_in_the_wild_info.txt ('<id> # <name>'
    lines, line n for image n) or, without it, the struct `info` of SUFR_in_the_wild_info.mat."""
    text = folder / f"{SUFRW_FOLDER}_info.txt"
    if text.is_file():
        ids, names = [], []
        try:
            lines = text.read_text(errors="replace").splitlines()
        except OSError as error:
            raise SUFRW.corrupt(text, f"cannot read it ({error})") from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            person, sep, name = line.partition("#")
            if not sep or not person.strip().isdigit():
                raise SUFRW.corrupt(text, f"line {number} is not '<id> # <name>': {line!r}")
            ids.append(int(person))
            names.append(name.strip())
        return ids, names
    mat = folder / f"{SUFRW_FOLDER}_info.mat"
    if not mat.is_file():
        raise SUFRW.missing(folder.parent, f"no {text.name} or {mat.name} in {folder}")
    info = read_mat(SUFRW, mat, ("info",))["info"]
    try:
        # A struct of two arrays (info.id(n), info.name{n}) or a struct array (info(n).id).
        column = (lambda key: info[key].item()) if info.size == 1 else (lambda key: info[key])
        ids = [int(np.asarray(v).reshape(-1)[0]) for v in np.asarray(column("id")).reshape(-1)]
        names = np.asarray(column("name")).reshape(-1)
        names = [str(np.asarray(name).reshape(-1)[0]) for name in names]
    except (ValueError, IndexError, KeyError, TypeError) as error:
        raise SUFRW.corrupt(mat, f"info has no id and name fields per image ({error})") from None
    return ids, names


def sufrw_files(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """(image paths, labels, person names) of SUFR-W as shipped: image <n>.jpg of
    SUFR_in_the_wild/ shows the person on line n of the info file; labels number the people by
    id order. Every image listed must exist."""
    folder = root / SUFRW_FOLDER
    if not folder.is_dir():
        raise SUFRW.missing(root, f"no {SUFRW_FOLDER} folder in {root}")
    ids, names = _sufrw_identities(folder)
    people = sorted(set(ids))
    number = {person: label for label, person in enumerate(people)}
    name_of = dict(zip(ids, names, strict=True))
    paths = [folder / f"{n}.jpg" for n in range(1, len(ids) + 1)]
    require_listed(SUFRW, root, paths, "its info file")
    return paths, [number[person] for person in ids], [name_of[p] for p in people]


@register_dataset("sufrw")
def load_sufrw(
    root: str | os.PathLike,
    train_per_class: PositiveInt | None,
    test_per_class: PositiveInt | None,
    test_fraction: OpenFraction | None,
    split_seed: Seed,
    min_images: PositiveInt,
    decoding: Decoding,
) -> InMemoryDataset:
    """SUFR-W (Leibo, Liao & Poggio 2014) as N-way identification of its people, read from the
    package as shipped; its protocol is pair verification, so the split is a seeded rule."""
    root = SUFRW.check(root)
    return load_by_rule(
        SUFRW, root, *sufrw_files(root), decoding,
        rule=SplitRule(train_per_class, test_per_class, test_fraction, split_seed),
        min_images=min_images,
    )  # fmt: skip

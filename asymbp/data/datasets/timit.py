"""TIMIT (LDC93S1) as frame-level phone classification on log-mel filterbank features.

The paper's TIMIT task (its table may call the column "TIMIT80") is not known. Ours, every part
of it configurable: each 10 ms frame (25 ms Hamming window) of an utterance gets 40 log-mel
filterbank energies (HTK mel scale, 0 to 8 kHz, computed with torch.stft), stacked with the
frames `context` steps before and after it (edges repeated), and the label of the phone under
the frame's centre, the 61 TIMIT phones folded to the standard 39 (Lee & Hon 1989; 'q' frames
dropped). Training: TRAIN's SI and SX sentences (3696 utterances; SA sentences, read by every
speaker, left out as is standard); test: the core test set (24 speakers, 192 utterances) or all
of TEST (1344 utterances).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from asymbp.data.base import Expect, InMemoryDataset
from asymbp.data.cache import CacheKey, fingerprint, load_cached
from asymbp.data.formats.sphere import read_audio
from asymbp.data.layout import Layout
from asymbp.data.registry import register_dataset
from asymbp.registry import Count, Positive, PositiveInt

TIMIT = Layout(
    "timit",
    "https://catalog.ldc.upenn.edu/LDC93S1",
    contents="TRAIN/ and TEST/ (DR1..DR8/<speaker>/<sentence>.WAV and .PHN, any letter case), "
    "or LDC's TIMIT/ folder holding them",
)
#: The 61 phone labels of TIMIT's .PHN files.
PHONES_61 = (
    "b", "d", "g", "p", "t", "k", "dx", "q", "bcl", "dcl", "gcl", "pcl", "tcl", "kcl", "jh", "ch",
    "s", "sh", "z", "zh", "f", "th", "v", "dh", "m", "n", "ng", "em", "en", "eng", "nx", "l", "r",
    "w", "y", "hh", "hv", "el", "iy", "ih", "eh", "ey", "ae", "aa", "aw", "ay", "ah", "ao", "oy",
    "ow", "uh", "uw", "ux", "er", "ax", "ix", "axr", "ax-h", "pau", "epi", "h#",
)  # fmt: skip
#: Lee & Hon (1989)'s folding of 61 phones to 39; None: the frame is dropped (the glottal stop).
FOLD_39 = {
    "ao": "aa", "ax": "ah", "ax-h": "ah", "axr": "er", "hv": "hh", "ix": "ih", "el": "l",
    "em": "m", "en": "n", "nx": "n", "eng": "ng", "zh": "sh", "ux": "uw", "q": None,
    **dict.fromkeys(("pcl", "tcl", "kcl", "bcl", "dcl", "gcl", "h#", "pau", "epi"), "sil"),
}  # fmt: skip
PHONES_39 = tuple(dict.fromkeys(FOLD_39.get(p, p) for p in PHONES_61 if FOLD_39.get(p, p)))
#: The core test set's 24 speakers (2 men and 1 woman per dialect region), as listed by
#: kaldi-asr/kaldi egs/timit/s5/conf/test_spk.list.
CORE_TEST_SPEAKERS = frozenset((
    "mdab0", "mwbt0", "felc0", "mtas1", "mwew0", "fpas0", "mjmp0", "mlnt0", "fpkt0", "mlll0",
    "mtls0", "fjlm0", "mbpm0", "mklt0", "fnlp0", "mcmj0", "mjdh0", "fmgd0", "mgrt0", "mnjm0",
    "fdhc0", "mjln0", "mpam0", "fmld0",
))  # fmt: skip
TEST_SETS = ("core", "full")


def phone_classes(phones: int) -> dict[str, int]:
    """.PHN label -> class index for the 61- or 39-phone task (-1: the frame is dropped)."""
    if phones == 61:
        return {phone: i for i, phone in enumerate(PHONES_61)}
    if phones == 39:
        folded = {phone: FOLD_39.get(phone, phone) for phone in PHONES_61}
        return {p: -1 if f is None else PHONES_39.index(f) for p, f in folded.items()}
    raise ValueError(f"timit: phones must be 39 or 61, got {phones!r}")


@functools.lru_cache(maxsize=8)
def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters, equally spaced on the HTK mel scale from
    0 Hz to the Nyquist frequency, each peaking at 1."""
    top = 2595.0 * math.log10(1.0 + sample_rate / 2 / 700.0)
    edges = 700.0 * (10.0 ** (torch.linspace(0.0, top, n_mels + 2, dtype=torch.float64) / 2595) - 1)
    bins = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    return rising.minimum(falling).clamp(min=0.0).float()


def log_mel(samples: torch.Tensor, sample_rate: int, n_mels: int, frame: int, hop: int):
    """(T, n_mels) log filterbank energies of the T = 1 + (len - frame) // hop whole frames."""
    if samples.numel() < frame:
        return torch.zeros(0, n_mels)
    window = torch.hamming_window(frame, periodic=False)
    spectrum = torch.stft(
        samples, frame, hop, window=window, center=False, return_complex=True
    )  # (frame // 2 + 1, T)
    energies = mel_filterbank(n_mels, frame, sample_rate) @ spectrum.abs().square()
    return energies.clamp(min=1e-10).log().T


def stack_context(frames: torch.Tensor, context: int) -> torch.Tensor:
    """(T, (2 context + 1) M) from (T, M): each frame with its neighbours, edges repeated."""
    padded = torch.cat([frames[:1].expand(context, -1), frames, frames[-1:].expand(context, -1)])
    window = padded.unfold(0, 2 * context + 1, 1)  # (T, M, 2 context + 1)
    return window.transpose(1, 2).reshape(frames.shape[0], -1)


def _phone_labels(path: Path, length: int, classes: dict[str, int]) -> np.ndarray:
    """One class per sample from a .PHN file ("start end phone" lines, in samples); -1 where
    no phone or a dropped one."""
    labels = np.full(length, -1, dtype=np.int64)
    try:
        lines = path.read_text().split("\n")
    except (OSError, UnicodeDecodeError) as error:
        raise TIMIT.corrupt(path, f"cannot read it ({error})") from None
    for number, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3 or not (parts[0].isdigit() and parts[1].isdigit()):
            raise TIMIT.corrupt(path, f"line {number} is not 'start end phone': {line!r}")
        if parts[2] not in classes:
            raise TIMIT.corrupt(path, f"line {number}: unknown phone {parts[2]!r}")
        labels[int(parts[0]) : int(parts[1])] = classes[parts[2]]
    return labels


def _child(folder: Path, name: str) -> Path | None:
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.lower() == name.lower()]
    return found[0] if found else None


def corpus_folders(root: Path) -> tuple[Path, Path]:
    """TRAIN/ and TEST/ (any letter case) in root or, as LDC's archive unpacks (timit/TIMIT/),
    in its TIMIT/ folder."""
    corpus = _child(root, "TIMIT")
    for folder in (root, corpus):
        if folder is not None and _child(folder, "TRAIN") and _child(folder, "TEST"):
            return _child(folder, "TRAIN"), _child(folder, "TEST")
    raise TIMIT.missing(root, f"no TRAIN and TEST folders in {root} or {root / 'TIMIT'}")


def _utterances(folder: Path, include_sa: bool, speakers: frozenset[str] | None) -> list[Path]:
    """The .PHN files under folder (their .WAV beside them), SA sentences and speakers not in
    `speakers` (None: all) left out."""
    found = []
    for phn in sorted(p for p in folder.rglob("*") if p.suffix.lower() == ".phn"):
        if (include_sa or not phn.stem.lower().startswith("sa")) and (
            speakers is None or phn.parent.name.lower() in speakers
        ):
            found.append(phn)
    if not found:
        raise TIMIT.missing(folder, f"no .PHN files of the chosen speakers in {folder}")
    return found


def _wav_beside(phn: Path) -> Path:
    for suffix in (".WAV", ".wav"):
        if phn.with_suffix(suffix).is_file():
            return phn.with_suffix(suffix)
    raise TIMIT.missing(phn.parent, f"no {phn.stem}.WAV beside {phn}")


def _frames(phn: Path, options: dict, classes: dict[str, int]):
    """(features (T, n_mels), labels (T,)) of one utterance; label -1: drop the frame."""
    samples, rate = read_audio(TIMIT, _wav_beside(phn))
    frame = round(options["frame_ms"] * rate / 1000)
    hop = round(options["hop_ms"] * rate / 1000)
    features = log_mel(torch.from_numpy(samples), rate, options["n_mels"], frame, hop)
    centres = np.arange(features.shape[0]) * hop + frame // 2
    labels = _phone_labels(phn, samples.size, classes)[centres]
    return features, torch.from_numpy(labels)


def frame_features(utterances: list[Path], options: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 (N, (2 context + 1) n_mels) features and int64 (N,) labels of all kept frames."""
    classes = phone_classes(options["phones"])
    parts = [_frames(phn, options, classes) for phn in utterances]
    context, width = options["context"], (2 * options["context"] + 1) * options["n_mels"]
    features = torch.empty(sum(int((y >= 0).sum()) for _, y in parts), width)
    labels, start = [], 0
    for frames, frame_labels in parts:
        keep = frame_labels >= 0
        if frames.shape[0] and keep.any():
            stacked = stack_context(frames, context)[keep]
            features[start : start + stacked.shape[0]] = stacked
            start += stacked.shape[0]
            labels.append(frame_labels[keep])
    return features, torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)


@register_dataset("timit")
def load_timit(
    root: str | os.PathLike,
    phones: Literal[39, 61],
    n_mels: PositiveInt,
    context: Count,
    frame_ms: Positive,
    hop_ms: Positive,
    test_set: Literal[TEST_SETS],
    include_sa: bool,
    expect: Expect | None,
    cache: bool,
    cache_dir: str | os.PathLike | None,
) -> InMemoryDataset:
    """Frames of TRAIN (train) and of the core or full TEST (test) as float32 feature vectors of
    (2 context + 1) * n_mels log-mel energies, labelled with one of `phones` (39 or 61) classes.

    expect: train and test count utterances (checked before the features are computed),
    classes the phone classes found in the frames."""
    options = {
        "phones": phones, "n_mels": n_mels, "context": context, "frame_ms": frame_ms,
        "hop_ms": hop_ms, "test_set": test_set, "include_sa": include_sa,
    }  # fmt: skip
    root = TIMIT.check(root)
    folders = corpus_folders(root)
    speakers = CORE_TEST_SPEAKERS if test_set == "core" else None
    train = _utterances(folders[0], include_sa, None)
    test = _utterances(folders[1], include_sa, speakers)
    utterances = dataclasses.replace(expect, classes=None)
    utterances.check("timit", folders[0].parent, 0, len(train), len(test), "utterances")
    key = CacheKey(
        "timit",
        f"{test_set}test" + ("+sa" if include_sa else ""),
        f"{phones}ph-{n_mels}mel-ctx{context}",
        {"root": str(root), **options, "files": fingerprint(index=[str(p) for p in train + test])},
        fingerprint(folders),
    )

    def build() -> InMemoryDataset:
        (train_x, train_y), (test_x, test_y) = (frame_features(u, options) for u in (train, test))
        return InMemoryDataset("timit", train_x, train_y, test_x, test_y, num_classes=phones)

    data = load_cached(key, build, cache_dir if cache else None)
    return dataclasses.replace(expect, train=None, test=None).check_data(data, folders[0].parent)

"""Tiny copies of the paper's 15 datasets, each written in its real on-disk format and layout.

`COPIES[name](data_root)` writes `data_root/<name>/...` as the dataset's config expects it and
returns a `Tiny`: the config overrides the tiny copy needs and what loading it must give.
The writers encode each format independently of asymbp's readers (IDX files excepted: they use
asymbp's write_idx, whose bytes tests/test_data.py checks against the format).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from asymbp.data.formats.idx import write_idx


@dataclass
class Tiny:
    """What a tiny copy must load as: split sizes, sample shape, classes, and the overrides.

    The overrides end with the copy's `dataset.expect` values (the guard's counts: classes found
    and, unless given otherwise in `expect`, the split sizes), as a real copy's come from its
    config."""

    train: int
    test: int
    shape: tuple[int, ...]
    num_classes: int
    overrides: list[str] = field(default_factory=list)
    model: str = "paper_cnn"
    train_overrides: list[str] = field(default_factory=list)  # for the one-epoch run only
    arrays: dict = field(default_factory=dict)  # what was written, for pixel-exact checks
    expect: dict = field(default_factory=dict)  # guard counts other than the defaults below

    def __post_init__(self) -> None:
        counts = {"classes": self.num_classes, "train": self.train, "test": self.test}
        self.expect = counts | self.expect
        expect = [f"dataset.expect.{key}={value}" for key, value in self.expect.items()]
        self.overrides = self.overrides + expect


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def write_image(path: Path, seed: int, size: tuple[int, int] = (24, 18), mode: str = "RGB") -> Path:
    """A random image in the format its suffix names (JPEG, PNG, PPM...)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": 3, "L": 1}[mode]
    pixels = rng(seed).integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(path)
    return path


def write_pickle(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as file:
        pickle.dump(value, file, protocol=2)


# ----------------------------------------------------------------------------- array formats


def mnist(data_root: Path) -> Tiny:
    """The four IDX files, gzipped, with 30 / 10 images: not MNIST's official counts."""
    root = data_root / "mnist"
    root.mkdir(parents=True)
    g = rng(1)
    for prefix, n in (("train", 30), ("t10k", 10)):
        images = g.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))
    return Tiny(30, 10, (1, 28, 28), 10)


def _cifar(data_root: Path, name: str, folder: str, batches: dict[str, int], fine: bool) -> Tiny:
    """CIFAR pickles: dicts of "data" (N, 3072) uint8 in CHW order and the labels."""
    classes = 100 if fine else 10
    g, arrays, count = rng(2), {}, 0
    for batch, n in batches.items():
        data = g.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)
        labels = [(count + i) * 7 % classes for i in range(n)]
        count += n
        entry = {"batch_label": batch, "data": data, "filenames": [f"{i}.png" for i in range(n)]}
        if fine:
            entry.update(fine_labels=labels, coarse_labels=[v // 5 for v in labels])
        else:
            entry["labels"] = labels
        write_pickle(data_root / name / folder / batch, entry)
        arrays[batch] = (data.reshape(n, 3, 32, 32), labels)
    meta_name, key = ("meta", "fine_label_names") if fine else ("batches.meta", "label_names")
    write_pickle(data_root / name / folder / meta_name, {key: [f"c{i}" for i in range(classes)]})
    n_test = batches["test_batch" if not fine else "test"]
    found = len({label for _, labels in arrays.values() for label in labels})
    return Tiny(sum(batches.values()) - n_test, n_test, (3, 32, 32), classes, arrays=arrays,
                expect={"classes": found})  # fmt: skip


def cifar10(data_root: Path) -> Tiny:
    batches = {f"data_batch_{i}": 4 for i in range(1, 6)} | {"test_batch": 6}
    return _cifar(data_root, "cifar10", "cifar-10-batches-py", batches, fine=False)


def cifar100(data_root: Path) -> Tiny:
    return _cifar(data_root, "cifar100", "cifar-100-python", {"train": 20, "test": 6}, fine=True)


def svhn(data_root: Path) -> Tiny:
    """train_32x32.mat / test_32x32.mat: X (32, 32, 3, N) uint8, y (N, 1) in 1..10 (10 = 0)."""
    g, arrays, root = rng(3), {}, data_root / "svhn"
    root.mkdir(parents=True)
    for split, n in (("train", 12), ("test", 5)):
        images = g.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        labels = np.arange(n) % 10 + 1
        scipy.io.savemat(
            root / f"{split}_32x32.mat",
            {"X": images.transpose(2, 3, 1, 0), "y": labels.reshape(-1, 1).astype(np.uint8)},
        )
        arrays[split] = (images, labels % 10)
    return Tiny(12, 5, (3, 32, 32), 10, arrays=arrays)


def stl10(data_root: Path) -> Tiny:
    """stl10_binary/*_X.bin: uint8 images stored column-major (C, W, H); *_y.bin: 1..10."""
    folder = data_root / "stl10" / "stl10_binary"
    folder.mkdir(parents=True)
    g, arrays = rng(4), {}
    for split, n in (("train", 10), ("test", 6)):
        images = g.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)
        labels = (np.arange(n) % 10 + 1).astype(np.uint8)
        (folder / f"{split}_X.bin").write_bytes(images.transpose(0, 1, 3, 2).tobytes())
        (folder / f"{split}_y.bin").write_bytes(labels.tobytes())
        arrays[split] = (images, labels.astype(np.int64) - 1)
    return Tiny(10, 6, (3, 96, 96), 10, arrays=arrays)


# ----------------------------------------------------------------------------- image files


def caltech101(data_root: Path) -> Tiny:
    """caltech101/101_ObjectCategories/<category>/image_0001.jpg..., BACKGROUND_Google beside."""
    base = data_root / "caltech101" / "caltech101" / "101_ObjectCategories"
    for c, (category, n) in enumerate((("BACKGROUND_Google", 2), ("accordion", 5),
                                       ("airplanes", 5), ("anchor", 5))):  # fmt: skip
        for i in range(1, n + 1):
            write_image(base / category / f"image_{i:04d}.jpg", seed=10 * c + i)
    return Tiny(9, 6, (3, 64, 64), 3, ["dataset.train_per_class=3"])


def caltech256(data_root: Path) -> Tiny:
    """All 257 category folders (nnn.name/nnn_0001.jpg...), 2 small images each: the default
    config (256 classes, clutter left out) applies as it is."""
    base = data_root / "caltech256" / "caltech256" / "256_ObjectCategories"
    for number in range(1, 258):
        name = "clutter" if number == 257 else f"class{number}"
        for i in (1, 2):
            write_image(base / f"{number:03d}.{name}" / f"{number:03d}_{i:04d}.jpg",
                        seed=number * 3 + i, size=(12, 10))  # fmt: skip
    # 512 images of 256 classes: the one-epoch run uses 32x32 pixels to stay short.
    return Tiny(256, 256, (3, 64, 64), 256, train_overrides=["dataset.image_size=32"])


def flowers17(data_root: Path) -> Tiny:
    """jpg/image_NNNN.jpg (class = (N - 1) // 80) and datasplits.mat with trn1..tst3."""
    root = data_root / "flowers17"
    splits = {"trn": 1, "val": 2, "tst": 3}  # image k of each class goes to that part
    numbers = {part: np.array([80 * c + k for c in range(17)]) for part, k in splits.items()}
    for values in numbers.values():
        for n in values:
            write_image(root / "jpg" / f"image_{n:04d}.jpg", seed=int(n), size=(20, 16))
    content = {f"{part}{s}": values.reshape(1, -1).astype(np.float64)
               for s in (1, 2, 3) for part, values in numbers.items()}  # fmt: skip
    scipy.io.savemat(root / "datasplits.mat", content)
    return Tiny(34, 17, (3, 64, 64), 17)


def flowers102(data_root: Path) -> Tiny:
    """flowers-102/jpg/image_00001.jpg..., imagelabels.mat (labels 1..C), setid.mat."""
    base = data_root / "flowers102" / "flowers-102"
    labels = np.repeat([1, 2, 3], 5)  # images 1-5: class 1, 6-10: class 2, 11-15: class 3
    for n in range(1, labels.size + 1):
        write_image(base / "jpg" / f"image_{n:05d}.jpg", seed=n)
    scipy.io.savemat(base / "imagelabels.mat", {"labels": labels.reshape(1, -1)})
    scipy.io.savemat(
        base / "setid.mat",
        {"trnid": np.array([[1, 2, 6, 7, 11, 12]]), "valid": np.array([[3, 8, 13]]),
         "tstid": np.array([[4, 5, 9, 10, 14, 15]])},
    )  # fmt: skip
    return Tiny(9, 6, (3, 64, 64), 3)


LFW_PEOPLE = {"Alice_Able": 6, "Bob_Baker": 5, "Carl_Cole": 4, "Dora_Dunn": 1}


def _lfw_people(folder: Path) -> None:
    for p, (name, n) in enumerate(LFW_PEOPLE.items()):
        for i in range(1, n + 1):
            write_image(folder / name / f"{name}_{i:04d}.jpg", 7 * p + i, (25, 25))


def lfw(data_root: Path) -> Tiny:
    """UMass's files as torchvision lays them out: lfw-py/lfw_funneled/<Name>/<Name>_0001.jpg
    and lfw-py/lfw-names.txt ("Name<TAB>count")."""
    base = data_root / "lfw" / "lfw-py"
    _lfw_people(base / "lfw_funneled")
    (base / "lfw-names.txt").write_text("".join(f"{k}\t{v}\n" for k, v in LFW_PEOPLE.items()))
    # Stratified 25% of 6, 5 and 4 images: 1.5, 1.25, 1.0 -> 2, 1, 1 (largest remainder).
    return Tiny(11, 4, (3, 64, 64), 3, ["dataset.min_images=4"])


def lfw_kaggle(data_root: Path) -> Tiny:
    """The Kaggle mirror (jessicali9530/lfw-dataset): lfw-deepfunneled/lfw-deepfunneled/<Name>/
    and lfw_allnames.csv (columns name, images), no lfw-names.txt."""
    base = data_root / "lfw"
    _lfw_people(base / "lfw-deepfunneled" / "lfw-deepfunneled")
    rows = "".join(f"{k},{v}\n" for k, v in LFW_PEOPLE.items())
    (base / "lfw_allnames.csv").write_text("name,images\n" + rows)
    return Tiny(11, 4, (3, 64, 64), 3, ["dataset.min_images=4", "dataset.image_set=deepfunneled"])


def _person_folders(root: Path, counts: list[int]) -> None:
    for p, n in enumerate(counts):
        for i in range(n):
            write_image(root / f"person_{p:03d}" / f"{i}.jpg", seed=31 * p + i, size=(20, 20))


def pubfig83(data_root: Path) -> Tiny:
    """pubfig83/<person>/*.jpg, as pubfig83.v1.tgz unpacks in data_root."""
    _person_folders(data_root / "pubfig83", [5, 5, 5])
    return Tiny(9, 6, (3, 64, 64), 3, ["dataset.train_per_class=3"])


#: SUFR-W's people in the tiny copy: (id, name, images); ids as in the package (1..400).
SUFRW_PEOPLE = [(17, "Ada Lovelace", 5), (3, "Alan Turing", 5), (250, "Grace Hopper", 5),
                (399, "Kurt Godel", 1)]  # fmt: skip


def sufrw(data_root: Path) -> Tiny:
    """SUFR_ver1.3's SUFR-W as shipped (its README): SUFR_in_the_wild/<n>.jpg and
    SUFR_in_the_wild_info.txt, line n '<id> # <name>' for image n; people's images interleaved.
    One person has a single image: trained on only (20% of 1 rounds to 0 test images)."""
    folder = data_root / "sufrw" / "SUFR_in_the_wild"
    order = [(pid, name) for pid, name, n in SUFRW_PEOPLE for _ in range(n)]
    order = order[::2] + order[1::2]
    for n, (pid, _) in enumerate(order, 1):
        write_image(folder / f"{n}.jpg", seed=31 * pid + n, size=(20, 20))
    folder.mkdir(parents=True, exist_ok=True)
    lines = "".join(f"{pid} # {name}\n" for pid, name in order)
    (folder / "SUFR_in_the_wild_info.txt").write_text(lines)
    return Tiny(13, 3, (3, 64, 64), 4)


ICUB_CATEGORIES = ("cup", "plate", "sponge")


def icubworld(data_root: Path) -> Tiny:
    """iCubWorld28's tree: {train,test}/day<d>/<category>/<category><k>/*.ppm, 4 days, here 3
    categories of 2 objects, one image each per day and split."""
    root = data_root / "icubworld"
    for s, split in enumerate(("train", "test")):
        for day in (1, 2, 3, 4):
            for c, category in enumerate(ICUB_CATEGORIES):
                for o in (1, 2):
                    path = root / split / f"day{day}" / category / f"{category}{o}" / "00000001.ppm"
                    write_image(path, seed=1000 * s + 100 * day + 10 * c + o)
    return Tiny(24, 24, (3, 64, 64), 3)


def scene67(data_root: Path) -> Tiny:
    """Images/<class>/*.jpg with TrainImages.txt and TestImages.txt ('class/file.jpg' lines)."""
    root = data_root / "scene67"
    train, test = [], []
    for c, scene in enumerate(("bar", "kitchen", "library")):
        for i in range(5):
            line = f"{scene}/img_{i}.jpg"
            write_image(root / "Images" / line, seed=13 * c + i, mode="L" if i == 0 else "RGB")
            (train if i < 3 else test).append(line)
    (root / "TrainImages.txt").write_text("\n".join(train) + "\n")
    (root / "TestImages.txt").write_text("\n".join(test) + "\n")
    return Tiny(9, 6, (3, 64, 64), 3)


# ----------------------------------------------------------------------------- TIMIT

#: One utterance's phones (start, end, phone) over 8000 samples (0.5 s at 16 kHz).
PHN = [(0, 1000, "h#"), (1000, 2400, "sh"), (2400, 2600, "q"), (2600, 5000, "iy"),
       (5000, 6500, "zh"), (6500, 8000, "h#")]  # fmt: skip
SAMPLES = 8000


def write_sphere(path: Path, samples: np.ndarray, rate: int = 16000, **fields) -> Path:
    """A NIST SPHERE file as TIMIT's: 1024-byte header, 16-bit little-endian PCM."""
    header = {"database_id": "-s5 TIMIT", "sample_count": f"-i {samples.size}",
              "sample_rate": f"-i {rate}", "channel_count": "-i 1",
              "sample_byte_format": "-s2 01", "sample_n_bytes": "-i 2",
              "sample_sig_bits": "-i 16"} | fields  # fmt: skip
    text = "NIST_1A\n   1024\n" + "".join(f"{k} {v}\n" for k, v in header.items()) + "end_head\n"
    order = "<i2" if "-s2 01" in header["sample_byte_format"] else ">i2"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode().ljust(1024, b" ") + samples.astype(order).tobytes())
    return path


def _utterance(stem: Path, seed: int) -> None:
    g = rng(seed)
    tone = np.sin(np.arange(SAMPLES) * 2 * np.pi * (200 + 50 * seed) / 16000)
    samples = (3000 * tone + 500 * g.standard_normal(SAMPLES)).astype(np.int16)
    write_sphere(stem.with_suffix(".WAV"), samples)
    stem.with_suffix(".PHN").write_text("".join(f"{a} {b} {p}\n" for a, b, p in PHN))


def timit_frames_per_utterance(frame: int = 400, hop: int = 160) -> int:
    """Frames whose centre lies on a phone other than 'q' (counted here, independently)."""
    centres = [t * hop + frame // 2 for t in range(1 + (SAMPLES - frame) // hop)]
    return sum(any(a <= c < b and p != "q" for a, b, p in PHN) for c in centres)


def timit(data_root: Path) -> Tiny:
    """TRAIN/DR1/<speaker>/{SI,SX,SA}*.WAV+.PHN; TEST with a core (MDAB0) and a non-core
    speaker (FAEM0): the default task keeps TRAIN's SI/SX and the core test set."""
    root = data_root / "timit"
    for s, speaker in enumerate(("FCJF0", "MDPK0")):
        for u, sentence in enumerate(("SI1027", "SX37", "SA1")):
            _utterance(root / "TRAIN" / "DR1" / speaker / sentence, seed=3 * s + u)
    _utterance(root / "TEST" / "DR1" / "MDAB0" / "SI1039", seed=10)
    _utterance(root / "TEST" / "DR1" / "MDAB0" / "SX139", seed=11)
    _utterance(root / "TEST" / "DR2" / "FAEM0" / "SI1392", seed=12)
    per = timit_frames_per_utterance()
    # The guard counts utterances, and the phone classes found (sil, sh, iy).
    return Tiny(4 * per, 2 * per, (11 * 40,), 39, model="mlp",
                expect={"classes": 3, "train": 4, "test": 2})  # fmt: skip


COPIES: dict[str, Callable[[Path], Tiny]] = {
    "mnist": mnist, "cifar10": cifar10, "cifar100": cifar100, "svhn": svhn, "stl10": stl10,
    "caltech101": caltech101, "caltech256": caltech256, "icubworld": icubworld,
    "flowers17": flowers17, "flowers102": flowers102, "pubfig83": pubfig83, "sufrw": sufrw,
    "lfw": lfw, "scene67": scene67, "timit": timit,
}  # fmt: skip

"""The paper's 15 datasets: tiny copies in each real format load through the registry and train
for an epoch; missing, incomplete and corrupt files give one-line errors; the cache."""

from __future__ import annotations

import gzip
import inspect
import math
import os
import pickle
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from conftest import CONFIG_DIR, compose_config, run_cli
from dataset_copies import (
    COPIES,
    ICUB_CATEGORIES,
    LFW_PEOPLE,
    PHN,
    SUFRW_PEOPLE,
    cifar10,
    icubworld,
    lfw,
    lfw_kaggle,
    mnist,
    pubfig83,
    scene67,
    stl10,
    sufrw,
    svhn,
    timit,
    timit_frames_per_utterance,
    write_image,
    write_sphere,
)
from omegaconf import OmegaConf

from asymbp.data import (
    DATASETS,
    DEBIAN_FASHION_MNIST,
    PAPER_DATASETS,
    DatasetError,
    DatasetWarning,
    load_dataset,
    pipeline,
)
from asymbp.data.datasets import cifar
from asymbp.data.datasets.sufrw import sufrw_files
from asymbp.data.datasets.timit import (
    CORE_TEST_SPEAKERS,
    FOLD_39,
    PHONES_39,
    PHONES_61,
    log_mel,
    mel_filterbank,
    phone_classes,
    stack_context,
)
from asymbp.data.formats.idx import write_idx
from asymbp.data.formats.images import conform
from asymbp.data.splits import SplitRule, keep_classes, per_class_split
from asymbp.train import run

PAPER_15 = list(PAPER_DATASETS)
FASHION_MNIST_ROOT = DEBIAN_FASHION_MNIST
#: The official page each dataset's error message must point to.
PAGES = {
    "mnist": "yann.lecun.com/exdb/mnist", "cifar10": "cs.toronto.edu/~kriz/cifar.html",
    "cifar100": "cs.toronto.edu/~kriz/cifar.html", "svhn": "ufldl.stanford.edu/housenumbers",
    "stl10": "cs.stanford.edu/~acoates/stl10", "caltech101": "data.caltech.edu/records",
    "caltech256": "data.caltech.edu/records", "icubworld": "robotology.github.io/iCubWorld",
    "flowers17": "robots.ox.ac.uk/~vgg/data/flowers/17",
    "flowers102": "robots.ox.ac.uk/~vgg/data/flowers/102",
    "pubfig83": "vision.seas.harvard.edu/pubfig83", "sufrw": "cbmm.mit.edu",
    "lfw": "vis-www.cs.umass.edu/lfw", "scene67": "web.mit.edu/torralba/www/indoor.html",
    "timit": "catalog.ldc.upenn.edu/LDC93S1",
}  # fmt: skip


def dataset_options(name: str, data_root: Path, *overrides: str) -> dict:
    """The loader keywords asymbp-train would pass for dataset=name data_root=data_root."""
    cfg = compose_config(f"dataset={name}", f"data_root={data_root}", *overrides)
    options = OmegaConf.to_container(cfg.dataset, resolve=True)
    assert options.pop("name") == name
    return options


def load(name: str, data_root: Path, *overrides: str):
    return load_dataset(name, **dataset_options(name, data_root, *overrides))


# ------------------------------------------------------------------------- every dataset


@pytest.mark.parametrize("name", PAPER_15)
def test_every_paper_dataset_has_a_config_a_loader_a_copy_and_a_page(name):
    """Composes under data_root with its files and cache below it, and is registered."""
    cfg = compose_config(f"dataset={name}", "data_root=/srv/data")
    assert cfg.dataset.name == name and name in DATASETS
    assert cfg.dataset.root == f"/srv/data/{name}"
    assert cfg.dataset.cache_dir == "/srv/data/.cache"
    assert name in COPIES and name in PAGES


def dataset_files() -> list[Path]:
    return sorted((CONFIG_DIR / "dataset").glob("*.yaml"))


def test_every_config_key_has_a_comment():
    for path in dataset_files():
        lines = path.read_text().splitlines()
        keys = [line for line in lines if line and not line.startswith("#")]
        plain = ("name:", "defaults:", "  - _self_")
        assert all("#" in line for line in keys if not line.startswith(plain)), path.name


def test_every_loader_takes_exactly_its_config_keys_without_defaults(tmp_path):
    """The YAML is the one source of defaults: a loader's parameters are its config's keys."""
    options = {p.stem for p in dataset_files() if not p.stem.startswith("_")}
    assert options == set(DATASETS)
    for name, loader in DATASETS.items():
        keys = set(compose_config(f"dataset={name}").dataset) - {"name"}
        parameters = inspect.signature(loader).parameters
        assert set(parameters) == keys, name
        assert all(p.default is inspect.Parameter.empty for p in parameters.values()), name


def test_image_sets_take_their_shared_keys_from_the_base():
    base = OmegaConf.load(CONFIG_DIR / "dataset" / "_image_base.yaml")
    for name in [*PAPER_15, "fashion_mnist"]:
        if name != "timit":  # features, not images
            assert set(base) <= set(compose_config(f"dataset={name}").dataset), name
            text = (CONFIG_DIR / "dataset" / f"{name}.yaml").read_text()
            assert "- _image_base" in text and "cache_dir:" not in text, name
    # A key of the base set on the command line reaches the loader like any other.
    cfg = compose_config("dataset=caltech101", "dataset.fit=crop").dataset
    assert cfg.fit == "crop" and cfg.image_size == base.image_size


@pytest.mark.parametrize("name", PAPER_15)
def test_tiny_copy_loads_and_trains_one_epoch(name, tmp_path, make_config):
    data_root = tmp_path / "data"
    tiny = COPIES[name](data_root)
    data = load(name, data_root, *tiny.overrides)

    assert (len(data.train_labels), len(data.test_labels)) == (tiny.train, tiny.test)
    assert data.input_shape == tiny.shape and data.num_classes == tiny.num_classes
    expected_dtype = torch.float32 if name == "timit" else torch.uint8
    assert data.train_images.dtype == data.test_images.dtype == expected_dtype
    labels = torch.cat([data.train_labels, data.test_labels])
    assert labels.dtype == torch.int64 and int(labels.min()) >= 0
    assert int(labels.max()) < tiny.num_classes
    if name not in ("timit", "cifar100"):  # every class is in the tiny copy's training split
        assert set(data.train_labels.tolist()) == set(range(tiny.num_classes))

    metrics = run(
        make_config(
            f"dataset={name}", f"data_root={data_root}", f"model={tiny.model}", "epochs=1",
            "batch_size=512", "alignment=false", *tiny.overrides, *tiny.train_overrides,
        )
    )  # fmt: skip
    assert metrics["epochs_completed"] == 1 and not metrics["diverged"]
    assert 0.0 <= metrics["test_acc"] <= 1.0


# ------------------------------------------------------------------- formats, pixel-exact


def test_cifar_pickles_decode_to_the_stored_pixels_and_labels(tmp_path):
    tiny = cifar10(tmp_path)
    data = load("cifar10", tmp_path, *tiny.overrides)
    first, labels = tiny.arrays["data_batch_1"]
    assert torch.equal(data.train_images[:4], torch.from_numpy(first))
    assert data.train_labels[:4].tolist() == labels
    assert torch.equal(data.test_images, torch.from_numpy(tiny.arrays["test_batch"][0]))


def test_svhn_mat_decodes_pixels_and_maps_label_10_to_0(tmp_path):
    tiny = svhn(tmp_path)
    data = load("svhn", tmp_path, *tiny.overrides)
    images, labels = tiny.arrays["train"]
    assert torch.equal(data.train_images, torch.from_numpy(images))
    assert data.train_labels.tolist() == labels.tolist() and 0 in data.train_labels.tolist()


def test_stl10_binaries_are_transposed_from_column_major(tmp_path):
    tiny = stl10(tmp_path)
    data = load("stl10", tmp_path, *tiny.overrides)
    images, labels = tiny.arrays["test"]
    assert torch.equal(data.test_images, torch.from_numpy(images))
    assert data.test_labels.tolist() == labels.tolist()


def test_mnist_reads_any_sample_count_and_converts_channels_and_size(tmp_path):
    tiny = mnist(tmp_path)
    data = load("mnist", tmp_path, *tiny.overrides, "dataset.channels=3", "dataset.image_size=32")
    assert data.input_shape == (3, 32, 32) and len(data.train_labels) == 30
    assert torch.equal(data.train_images[:, 0], data.train_images[:, 2])


def test_conform_grey_is_pillow_luma_and_resize_keeps_a_constant_image():
    rgb = torch.tensor([255, 0, 0], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 4, 4)
    grey = conform(rgb, None, 1)
    assert grey.shape == (2, 1, 4, 4) and int(grey[0, 0, 0, 0]) == round(0.299 * 255)
    resized = conform(torch.full((1, 3, 10, 10), 77, dtype=torch.uint8), 3, None)
    assert resized.shape == (1, 3, 3, 3) and bool((resized == 77).all())


def test_image_folders_convert_grey_images_to_rgb(tmp_path):
    tiny = scene67(tmp_path)  # img_0.jpg of each class is grey ("L")
    data = load("scene67", tmp_path, *tiny.overrides)
    assert data.input_shape == (3, 64, 64)
    grey = load("scene67", tmp_path, *tiny.overrides, "dataset.channels=1")
    assert grey.input_shape == (1, 64, 64)


def test_timit_frames_labels_and_folding(tmp_path):
    tiny = timit(tmp_path)
    data = load("timit", tmp_path, *tiny.overrides)
    per = timit_frames_per_utterance()
    # TRAIN: 2 speakers x (SI, SX); SA left out. TEST: the core speaker MDAB0 only.
    assert len(data.train_labels) == 4 * per and len(data.test_labels) == 2 * per
    used = {PHONES_39[i] for i in data.train_labels.unique().tolist()}
    assert used == {"sil", "sh", "iy"}  # h# -> sil, zh -> sh, q dropped
    full = load("timit", tmp_path, *tiny.overrides, "dataset.test_set=full",
                "dataset.include_sa=true", "dataset.expect.train=6",
                "dataset.expect.test=3")  # fmt: skip
    assert len(full.train_labels) == 6 * per and len(full.test_labels) == 3 * per
    phones61 = load("timit", tmp_path, *tiny.overrides, "dataset.phones=61", "dataset.context=0",
                    "dataset.expect.classes=5")  # fmt: skip
    assert phones61.num_classes == 61 and phones61.input_shape == (40,)
    # 61 phones keep 'q' as a class: one more frame per utterance than the 39-phone task.
    assert len(phones61.train_labels) == 4 * (per + 1)
    assert {PHONES_61[i] for i in phones61.train_labels.unique().tolist()} == {p for _, _, p in PHN}


def test_phone_folding_is_lee_and_hon():
    assert len(PHONES_61) == 61 and len(set(PHONES_61)) == 61
    assert len(PHONES_39) == 39 and set(FOLD_39) <= set(PHONES_61)
    classes = phone_classes(39)
    assert classes["q"] == -1
    assert len({c for c in classes.values() if c >= 0}) == 39
    assert classes["ao"] == classes["aa"] and classes["zh"] == classes["sh"]
    assert classes["pau"] == classes["h#"] == classes["bcl"] == PHONES_39.index("sil")


def test_log_mel_puts_a_tone_in_its_band_and_context_stacks_neighbours():
    rate, n = 16000, 4000
    tone = torch.sin(torch.arange(n) * 2 * torch.pi * 1000 / rate)
    features = log_mel(tone, rate, 40, 400, 160)
    assert features.shape == (1 + (n - 400) // 160, 40)
    bank = mel_filterbank(40, 400, rate)
    assert int(features[5].argmax()) == int(bank[:, round(1000 / (rate / 400))].argmax())
    frames = torch.tensor([[1.0], [2.0], [3.0]])
    assert stack_context(frames, 1).tolist() == [[1, 1, 2], [1, 2, 3], [2, 3, 3]]


def test_sphere_big_endian_and_riff_read_like_little_endian(tmp_path):
    tiny = timit(tmp_path)
    reference = load("timit", tmp_path, *tiny.overrides, "dataset.cache=false")
    wav = tmp_path / "timit" / "TRAIN" / "DR1" / "FCJF0" / "SI1027.WAV"
    samples = np.frombuffer(wav.read_bytes()[1024:], dtype="<i2")
    write_sphere(wav, samples.astype(">i2").view("<i2").byteswap(), sample_byte_format="-s2 10")
    assert torch.equal(load("timit", tmp_path, *tiny.overrides, "dataset.cache=false").train_images,
                       reference.train_images)  # fmt: skip
    import wave

    with wave.open(str(wav), "wb") as riff:
        riff.setnchannels(1), riff.setsampwidth(2), riff.setframerate(16000)
        riff.writeframes(samples.astype("<i2").tobytes())
    assert torch.equal(load("timit", tmp_path, *tiny.overrides, "dataset.cache=false").train_images,
                       reference.train_images)  # fmt: skip


# ------------------------------------------------------------------- layouts as shipped

#: kaldi-asr/kaldi egs/timit/s5/conf/test_spk.list (the core test set) and dev_spk.list.
KALDI_TEST_SPEAKERS = [
    "mdab0",
    "mwbt0",
    "felc0",
    "mtas1",
    "mwew0",
    "fpas0",
    "mjmp0",
    "mlnt0",
    "fpkt0",
    "mlll0",
    "mtls0",
    "fjlm0",
    "mbpm0",
    "mklt0",
    "fnlp0",
    "mcmj0",
    "mjdh0",
    "fmgd0",
    "mgrt0",
    "mnjm0",
    "fdhc0",
    "mjln0",
    "mpam0",
    "fmld0",
]
KALDI_DEV_SPEAKERS = [
    "faks0",
    "fdac1",
    "fjem0",
    "mgwt0",
    "mjar0",
    "mmdb1",
    "mmdm2",
    "mpdf0",
    "fcmh0",
    "fkms0",
    "mbdg0",
    "mbwm0",
    "mcsh0",
    "fadg0",
    "fdms0",
    "fedw0",
    "mgjf0",
    "mglb0",
    "mrtk0",
    "mtaa0",
    "mtdt0",
    "mthc0",
    "mwjg0",
    "fnmr0",
    "frew0",
    "fsem0",
    "mbns0",
    "mmjr0",
    "mdls0",
    "mdlf0",
    "mdvc0",
    "mers0",
    "fmah0",
    "fdrw0",
    "mrcs0",
    "mrjm4",
    "fcal1",
    "mmwh0",
    "fjsj0",
    "majc0",
    "mjsw0",
    "mreb0",
    "fgjd0",
    "fjmg0",
    "mroa0",
    "mteb0",
    "mjfc0",
    "mrjr0",
    "fmml0",
    "mrws1",
]


def test_timit_core_test_set_is_kaldis_and_shares_no_development_speaker():
    assert len(KALDI_TEST_SPEAKERS) == 24 and len(KALDI_DEV_SPEAKERS) == 50
    assert set(KALDI_TEST_SPEAKERS) == CORE_TEST_SPEAKERS
    assert CORE_TEST_SPEAKERS.isdisjoint(KALDI_DEV_SPEAKERS)


def test_timit_reads_ldcs_timit_folder_and_counts_utterances(tmp_path):
    tiny = timit(tmp_path / "flat")
    (tmp_path / "ldc" / "timit").mkdir(parents=True)
    (tmp_path / "flat" / "timit").rename(tmp_path / "ldc" / "timit" / "TIMIT")
    data = load("timit", tmp_path / "ldc", *tiny.overrides)
    assert (len(data.train_labels), len(data.test_labels)) == (tiny.train, tiny.test)
    # The config's counts (3696 and 192 utterances) refuse the tiny copy: it is incomplete.
    with pytest.raises(DatasetError, match=r"^timit: expected 3696 training utterances, found 4 "):
        load("timit", tmp_path / "ldc")


def test_icubworld28_labels_by_category_or_object_and_chooses_days(tmp_path):
    tiny = icubworld(tmp_path)
    data = load("icubworld", tmp_path, *tiny.overrides)
    assert data.num_classes == len(ICUB_CATEGORIES) == 3
    assert torch.bincount(data.test_labels).tolist() == [8, 8, 8]  # 2 objects x 4 days
    objects = load("icubworld", tmp_path, *tiny.overrides, "dataset.labels=object",
                   "dataset.expect.classes=6")  # fmt: skip
    assert objects.num_classes == 6 and torch.bincount(objects.train_labels).tolist() == [4] * 6
    some = load("icubworld", tmp_path, *tiny.overrides, "dataset.train_days=[1,2]",
                "dataset.test_days=[4]", "dataset.expect.train=12",
                "dataset.expect.test=6")  # fmt: skip
    assert (len(some.train_labels), len(some.test_labels)) == (12, 6)


def test_icubworld_refuses_other_trees(tmp_path):
    icubworld(tmp_path)
    # The real config expects iCubWorld28's 7 categories: 3 is an incomplete copy.
    with pytest.raises(DatasetError, match=r"^icubworld: expected 7 classes, found 3 in "):
        load("icubworld", tmp_path)
    # A tree without day folders (categories directly under train/) is not iCubWorld28.
    root = tmp_path / "icubworld"
    for split in ("train", "test"):
        (root / split / "day1").rename(root / f"{split}-day1")
        for day in (2, 3, 4):
            shutil.rmtree(root / split / f"day{day}")
        (root / split).rmdir()
        (root / f"{split}-day1").rename(root / split)
    with pytest.raises(DatasetError, match=r"^icubworld: no train/day1 in .*iCubWorld28"):
        load("icubworld", tmp_path, "dataset.expect.classes=3")


def test_sufrw_reads_the_flat_package_and_its_identity_list(tmp_path):
    tiny = sufrw(tmp_path)
    data = load("sufrw", tmp_path, *tiny.overrides)
    # People numbered by id (3, 17, 250, 399): Turing 5, Lovelace 5, Hopper 5, Godel 1.
    counts = torch.bincount(torch.cat([data.train_labels, data.test_labels])).tolist()
    by_id = sorted(SUFRW_PEOPLE)
    assert counts == [n for _, _, n in by_id]
    # Image n shows the person on line n of the identity list.
    folder = tmp_path / "sufrw" / "SUFR_in_the_wild"
    text = folder / "SUFR_in_the_wild_info.txt"
    lines = text.read_text().splitlines()
    ids = [int(line.split(" # ")[0]) for line in lines]
    names = [line.split(" # ")[1] for line in lines]
    paths, labels, people = sufrw_files(tmp_path / "sufrw")
    assert [p.name for p in paths] == [f"{n}.jpg" for n in range(1, len(lines) + 1)]
    assert [people[label] for label in labels] == names
    # The .mat identity list, as the package also ships it, gives the same dataset.
    scipy.io.savemat(folder / "SUFR_in_the_wild_info.mat",
                     {"info": {"id": np.array(ids, float).reshape(-1, 1),
                               "name": np.array(names, dtype=object).reshape(-1, 1)}})  # fmt: skip
    text.unlink()
    from_mat = load("sufrw", tmp_path, *tiny.overrides, "dataset.cache=false")
    assert torch.equal(from_mat.train_labels, data.train_labels)
    assert torch.equal(from_mat.test_images, data.test_images)
    # ... also saved as a struct array, info(n).id and info(n).name.
    people = np.zeros((1, len(ids)), dtype=[("id", "O"), ("name", "O")])
    for n, (pid, name) in enumerate(zip(ids, names, strict=True)):
        people[0, n]["id"], people[0, n]["name"] = np.array([[pid]]), np.array([name])
    scipy.io.savemat(folder / "SUFR_in_the_wild_info.mat", {"info": people})
    again = load("sufrw", tmp_path, *tiny.overrides, "dataset.cache=false")
    assert torch.equal(again.train_labels, data.train_labels)


def test_sufrw_refuses_folders_per_person_and_a_short_identity_list(tmp_path):
    folder = tmp_path / "sufrw"
    for p, n in enumerate((3, 3)):
        for i in range(n):
            write_image(folder / f"person_{p}" / f"{i}.jpg", seed=p * 10 + i)
    with pytest.raises(DatasetError, match=r"^sufrw: no SUFR_in_the_wild folder in "):
        load("sufrw", tmp_path)
    shutil.rmtree(folder)
    tiny = sufrw(tmp_path)
    text = folder / "SUFR_in_the_wild" / "SUFR_in_the_wild_info.txt"
    # Every image labelled as one person: one class where the config expects 400.
    text.write_text("".join("1 # Someone\n" for _ in range(tiny.train + tiny.test)))
    with pytest.raises(DatasetError, match=r"^sufrw: expected 400 classes, found 1 in "):
        load("sufrw", tmp_path)
    text.write_text("1 # Someone\n" * 40)
    with pytest.raises(DatasetError, match=r"^sufrw: 24 of the 40 images .* missing, first .*17"):
        load("sufrw", tmp_path)


def test_lfw_reads_the_kaggle_mirror_like_the_umass_files(tmp_path):
    tiny = lfw(tmp_path / "umass")
    umass = load("lfw", tmp_path / "umass", *tiny.overrides, "dataset.image_set=funneled")
    mirror = lfw_kaggle(tmp_path / "kaggle")
    kaggle = load("lfw", tmp_path / "kaggle", *mirror.overrides)
    assert torch.equal(umass.train_labels, kaggle.train_labels)
    assert torch.equal(umass.test_images, kaggle.test_images)  # the same image files
    assert kaggle.num_classes == sum(n >= 4 for n in LFW_PEOPLE.values())
    # Asking the mirror for the funneled images says it has deepfunneled only.
    with pytest.raises(DatasetError, match=r"^lfw: no lfw-py/lfw_funneled/ .*deepfunneled only"):
        load("lfw", tmp_path / "kaggle", *tiny.overrides)


def test_lfw_refuses_a_copy_missing_listed_images_or_people(tmp_path):
    tiny = lfw(tmp_path)
    with pytest.raises(DatasetError, match=r"^lfw: expected 62 classes, found 3 in "):
        load("lfw", tmp_path, "dataset.min_images=4")
    (tmp_path / "lfw" / "lfw-py" / "lfw_funneled" / "Bob_Baker" / "Bob_Baker_0005.jpg").unlink()
    with pytest.raises(DatasetError, match=r"^lfw: 1 of the 16 images .* first .*Bob_Baker_0005"):
        load("lfw", tmp_path, *tiny.overrides)


def test_pubfig83_extracted_one_level_too_deep_is_refused(tmp_path):
    pubfig83(tmp_path / "tmp")
    (tmp_path / "pubfig83").mkdir()
    (tmp_path / "tmp" / "pubfig83").rename(tmp_path / "pubfig83" / "pubfig83")
    with pytest.raises(DatasetError, match=r"^pubfig83: expected 83 classes, found 1 in "):
        load("pubfig83", tmp_path)


@pytest.mark.parametrize("name", PAPER_15)
def test_the_guard_refuses_a_copy_yielding_other_counts(name, tmp_path):
    tiny = COPIES[name](tmp_path)
    classes = tiny.expect["classes"]
    with pytest.raises(DatasetError) as info:
        load(name, tmp_path, *tiny.overrides, f"dataset.expect.classes={classes + 1}")
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{name}: expected {classes + 1} classes, ")
    assert f"found {classes} in {tmp_path / name}" in message
    with pytest.raises(DatasetError, match=rf"^{name}: expected {tiny.expect['test'] + 1} test "):
        load(name, tmp_path, *tiny.overrides, f"dataset.expect.test={tiny.expect['test'] + 1}")


def test_expect_null_checks_nothing_and_unknown_keys_are_refused(tmp_path):
    tiny = scene67(tmp_path)
    data = load("scene67", tmp_path, "dataset.expect=null")
    assert (len(data.train_labels), len(data.test_labels)) == (tiny.train, tiny.test)
    with pytest.raises(TypeError, match=r"scene67': expect takes the keys classes, train and test"):
        load("scene67", tmp_path, "+dataset.expect.people=3")


# ------------------------------------------------------------------------- split rules


def test_per_class_split_counts_and_small_classes():
    labels = torch.tensor([0] * 10 + [1] * 4 + [2] * 1)
    train, test = per_class_split(labels, 5, 3, seed=0)
    assert torch.bincount(labels[train], minlength=3).tolist() == [5, 3, 1]
    assert torch.bincount(labels[test], minlength=3).tolist() == [3, 1, 0]
    assert set(train.tolist()).isdisjoint(test.tolist())
    _, rest = per_class_split(labels, 5, None, seed=0)
    assert torch.bincount(labels[rest], minlength=3).tolist() == [5, 1, 0]
    again = per_class_split(labels, 5, 3, seed=0)
    other = per_class_split(labels, 5, 3, seed=1)
    assert torch.equal(train, again[0]) and not torch.equal(train, other[0])


def test_split_rule_takes_one_rule_and_names_it():
    assert SplitRule(30, 50).label == "30+50pc-s0"
    assert SplitRule(test_fraction=0.25, seed=3).label == "test0.25-s3"
    for bad in (
        {},
        {"train_per_class": 3, "test_fraction": 0.2},
        {"test_per_class": 2, "test_fraction": 0.2},
    ):
        with pytest.raises(ValueError):
            SplitRule(**bad)


def test_keep_classes_renumbers_the_kept_ones():
    index, labels, names = keep_classes(torch.tensor([2, 0, 2, 1, 2, 0]), ["a", "b", "c"], 2)
    assert index.tolist() == [0, 1, 2, 4, 5] and labels.tolist() == [1, 0, 1, 1, 0]
    assert names == ["a", "c"]


# ------------------------------------------------------------------------- errors


@pytest.mark.parametrize("name", PAPER_15)
def test_missing_directory_is_one_line_naming_dataset_path_files_and_page(name, tmp_path):
    with pytest.raises(DatasetError) as info:
        load(name, tmp_path / "nowhere")
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{name}: ")
    assert str(tmp_path / "nowhere" / name) in message and "expected " in message
    assert PAGES[name] in message


@pytest.mark.parametrize(
    "name, remove, named",
    [
        ("cifar10", "cifar10/cifar-10-batches-py/test_batch", "test_batch"),
        ("stl10", "stl10/stl10_binary/test_y.bin", "test_y.bin"),
        ("svhn", "svhn/test_32x32.mat", "test_32x32.mat"),
        ("flowers102", "flowers102/flowers-102/setid.mat", "setid.mat"),
        ("scene67", "scene67/TestImages.txt", "TestImages.txt"),
        ("lfw", "lfw/lfw-py/lfw-names.txt", "lfw-names.txt"),
        ("flowers17", "flowers17/datasplits.mat", "datasplits.mat"),
    ],
)
def test_incomplete_copy_names_the_missing_file(name, remove, named, tmp_path):
    tiny = COPIES[name](tmp_path)
    (tmp_path / remove).unlink()
    with pytest.raises(DatasetError, match=rf"^{name}: no .*{named}.* in .*; expected "):
        load(name, tmp_path, *tiny.overrides)


def test_a_different_class_count_is_an_incomplete_copy(tmp_path):
    scene67(tmp_path)
    with pytest.raises(DatasetError, match=r"^scene67: expected 67 classes, found 3 in "):
        load("scene67", tmp_path)


def test_bad_magic_numbers_name_the_file(tmp_path):
    tiny = mnist(tmp_path)
    images = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    write_idx(images, np.zeros(5, dtype=np.uint8))  # a labels file where images belong
    with pytest.raises(DatasetError, match=rf"^mnist: {images}: bad magic number 0x00000801"):
        load("mnist", tmp_path, *tiny.overrides)
    tiny = timit(tmp_path)
    wav = tmp_path / "timit" / "TEST" / "DR1" / "MDAB0" / "SX139.WAV"
    wav.write_bytes(b"GARBAGE!" + wav.read_bytes()[8:])
    with pytest.raises(DatasetError, match=rf"^timit: {wav}: bad magic number b'GARBAGE'"):
        load("timit", tmp_path, *tiny.overrides)


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.mark.parametrize(
    "name, relative, keep, problem",
    [
        ("mnist", "mnist/t10k-images-idx3-ubyte.gz", 0.6, "cannot read it"),
        ("cifar10", "cifar10/cifar-10-batches-py/data_batch_3", 0.6, "not a CIFAR pickle"),
        ("svhn", "svhn/train_32x32.mat", 0.6, "cannot read it as a MATLAB file"),
        ("stl10", "stl10/stl10_binary/train_X.bin", 0.55, "not a whole number of 3x96x96"),
        ("stl10", "stl10/stl10_binary/test_X.bin", 0.5, "is one of them truncated?"),
        ("timit", "timit/TRAIN/DR1/MDPK0/SX37.WAV", 0.6, "truncated"),
        # trn1, val1 and tst1 come first in the file: cut into them.
        ("flowers17", "flowers17/datasplits.mat", 0.1, "cannot read it as a MATLAB file"),
    ],
)
def test_truncated_file_is_one_line_naming_it(name, relative, keep, problem, tmp_path):
    tiny = COPIES[name](tmp_path)
    path = truncate(tmp_path / relative, keep)
    with pytest.raises(DatasetError) as info:
        load(name, tmp_path, *tiny.overrides)
    message = str(info.value)
    assert message.startswith(f"{name}: {path}: ") and problem in message
    assert "\n" not in message and PAGES[name] in message


def test_a_truncated_uncompressed_idx_file_names_its_byte_counts(tmp_path):
    tiny = mnist(tmp_path)
    gz = tmp_path / "mnist" / "train-labels-idx1-ubyte.gz"
    plain = gz.with_suffix("")
    plain.write_bytes(gzip.decompress(gz.read_bytes())[:-5])
    gz.unlink()
    with pytest.raises(DatasetError, match=rf"{plain}: truncated: holds 25 data bytes"):
        load("mnist", tmp_path, *tiny.overrides)


def test_compressed_sphere_says_to_decompress_it(tmp_path):
    tiny = timit(tmp_path)
    wav = tmp_path / "timit" / "TRAIN" / "DR1" / "FCJF0" / "SX37.WAV"
    write_sphere(wav, np.zeros(100, np.int16), sample_coding="-s26 pcm,embedded-shorten-v2.00")
    with pytest.raises(DatasetError, match=rf"{wav}: sample_coding .*shorten.*sph2pipe"):
        load("timit", tmp_path, *tiny.overrides)


def test_a_few_unreadable_images_are_skipped_and_counted(tmp_path):
    pubfig83(tmp_path)
    for p in range(3):  # 3 people x 40 images, so one bad image is under 1%... of 120: allowed
        for i in range(5, 40):
            write_image(tmp_path / "pubfig83" / f"person_{p:03d}" / f"{i}.jpg", 100 * p + i)
    bad = tmp_path / "pubfig83" / "person_001" / "7.jpg"
    truncate(bad, keep=0.3)
    overrides = ("dataset.expect.classes=3", "dataset.test_per_class=null")
    with pytest.warns(DatasetWarning, match=rf"skipped 1 unreadable image\(s\) of 120 .*{bad}"):
        data = load("pubfig83", tmp_path, *overrides)
    assert len(data.train_labels) + len(data.test_labels) == 119


def test_many_unreadable_images_are_an_error_naming_the_first(tmp_path):
    pubfig83(tmp_path)
    for i in (1, 2):
        (tmp_path / "pubfig83" / "person_000" / f"{i}.jpg").write_bytes(b"not a JPEG")
    with pytest.raises(DatasetError) as info:
        load("pubfig83", tmp_path, "dataset.train_per_class=3", "dataset.expect.classes=3")
    message = str(info.value)
    assert message.startswith(f"pubfig83: {tmp_path / 'pubfig83' / 'person_000'}")
    assert "unreadable image" in message and "2 of 15 images are unreadable" in message


@pytest.mark.slow
def test_asymbp_train_prints_the_one_line_error_and_exits_2(tmp_path):
    result = run_cli("dataset=cifar10", f"data_root={tmp_path}", f"output_root={tmp_path}")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"asymbp-train: error: cifar10: no such directory {tmp_path}")
    assert "cs.toronto.edu/~kriz/cifar.html or set dataset.download=true" in lines[-1]


# ------------------------------------------------------------------------- download


class FakeCIFAR10:
    """Stands in for torchvision's CIFAR10 with download=True: writes the tiny copy."""

    calls: list[Path] = []

    def __init__(self, root, download):
        assert download
        FakeCIFAR10.calls.append(Path(root))
        cifar10(Path(root).parent)


def test_download_true_fetches_missing_files_only(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar, "CIFAR10", FakeCIFAR10)
    FakeCIFAR10.calls = []
    expect = cifar10(tmp_path / "elsewhere").overrides  # the counts the fake download yields
    data = load("cifar10", tmp_path, *expect, "dataset.download=true")
    assert len(data.train_labels) == 20 and FakeCIFAR10.calls == [tmp_path / "cifar10"]
    load("cifar10", tmp_path, *expect, "dataset.download=true", "dataset.cache=false")
    assert len(FakeCIFAR10.calls) == 1  # the files are there: no second download


def test_a_failed_download_is_one_line(tmp_path, monkeypatch):
    def offline(root, download):
        raise OSError("network is unreachable")

    monkeypatch.setattr(cifar, "CIFAR10", offline)
    with pytest.raises(DatasetError, match=r"^cifar10: downloading into .* failed \(OSError: net"):
        load("cifar10", tmp_path, "dataset.download=true")


# ------------------------------------------------------------------------- cache


def cache_files(data_root: Path) -> list[Path]:
    return sorted((data_root / ".cache").glob("*.pt"))


def test_cache_file_is_named_and_reused_without_decoding(tmp_path, monkeypatch):
    tiny = COPIES["caltech101"](tmp_path)
    first = load("caltech101", tmp_path, *tiny.overrides)
    (path,) = cache_files(tmp_path)
    assert path.name.startswith("caltech101-3+50pc-s0-64px3c-")

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(pipeline, "decode_images", no_decoding)
    second = load("caltech101", tmp_path, *tiny.overrides)
    assert torch.equal(first.train_images, second.train_images)
    assert torch.equal(first.test_labels, second.test_labels)
    # Another size or split is another file.
    monkeypatch.undo()
    load("caltech101", tmp_path, *tiny.overrides, "dataset.image_size=32")
    load("caltech101", tmp_path, *tiny.overrides, "dataset.split_seed=1")
    assert len(cache_files(tmp_path)) == 3


def test_a_corrupt_cache_file_is_rebuilt_with_a_warning(tmp_path):
    tiny = cifar10(tmp_path)
    reference = load("cifar10", tmp_path, *tiny.overrides)
    (path,) = cache_files(tmp_path)
    truncate(path, keep=0.5)
    with pytest.warns(DatasetWarning, match=rf"cache file {path} is unreadable .* rebuilding"):
        rebuilt = load("cifar10", tmp_path, *tiny.overrides)
    assert torch.equal(rebuilt.train_images, reference.train_images)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load("cifar10", tmp_path, *tiny.overrides)  # the rebuilt file reads cleanly


def test_changed_source_files_rebuild_the_cache(tmp_path):
    tiny = cifar10(tmp_path)
    load("cifar10", tmp_path, *tiny.overrides)
    batch = tmp_path / "cifar10" / "cifar-10-batches-py" / "test_batch"
    entry = pickle.loads(batch.read_bytes(), encoding="latin1")
    entry["labels"] = [9] * len(entry["labels"])
    batch.write_bytes(pickle.dumps(entry, protocol=2))
    with pytest.warns(DatasetWarning, match="source files changed"):
        data = load("cifar10", tmp_path, *tiny.overrides, "dataset.expect.classes=null")
    assert data.test_labels.tolist() == [9] * tiny.test


def test_cache_false_writes_nothing(tmp_path):
    tiny = cifar10(tmp_path)
    load("cifar10", tmp_path, *tiny.overrides, "dataset.cache=false")
    assert not (tmp_path / ".cache").exists()


def test_real_fashion_mnist_with_the_cache(tmp_path):
    if not (FASHION_MNIST_ROOT / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(
            f"Fashion-MNIST is not in {FASHION_MNIST_ROOT}: install it with "
            "'apt-get install dataset-fashion-mnist' (Debian)"
        )
    options = dataset_options("fashion_mnist", tmp_path, f"dataset.root={FASHION_MNIST_ROOT}")
    start = time.perf_counter()
    first = load_dataset("fashion_mnist", **options)
    decoding = time.perf_counter() - start
    cached = math.inf
    for _ in range(2):  # the faster of two cached loads: less noise from other jobs
        start = time.perf_counter()
        second = load_dataset("fashion_mnist", **options)
        cached = min(cached, time.perf_counter() - start)
    assert len(cache_files(tmp_path)) == 1
    assert first.train_images.shape == (60000, 1, 28, 28) and len(first.test_labels) == 10000
    assert torch.equal(first.train_images, second.train_images)
    assert torch.equal(first.test_labels, second.test_labels)
    assert decoding >= 5 * cached, f"first load {decoding:.3f}s, cached load {cached:.3f}s"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_an_unwritable_cache_dir_warns_and_loads(tmp_path):
    tiny = cifar10(tmp_path)
    (tmp_path / ".cache").mkdir(mode=0o500)
    with pytest.warns(DatasetWarning, match="cannot write cache file"):
        data = load("cifar10", tmp_path, *tiny.overrides)
    assert len(data.train_labels) == 20

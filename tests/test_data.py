"""Data loaders: IDX reading (tiny files written here), digits, synthetic, and the helpers."""

from __future__ import annotations

import gzip
import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config
from omegaconf import OmegaConf

from asymbp.data import (
    DATASETS,
    DEBIAN_FASHION_MNIST,
    DatasetError,
    Decoding,
    Expect,
    InMemoryDataset,
    channel_stats,
    load_dataset,
    register_dataset,
    stratified_split,
)
from asymbp.data.decode import DECODING_KEYS
from asymbp.data.formats.idx import IDX_FILES, IMAGES_MAGIC, read_idx, write_idx

FASHION_MNIST_ROOT = DEBIAN_FASHION_MNIST


def load(name: str, **options):
    """load_dataset(name) with its config's keys (conf/dataset/<name>.yaml), `options` set as
    dataset.KEY=VALUE on the command line would set them."""
    overrides = [f"dataset.{key}={'null' if v is None else v}" for key, v in options.items()]
    cfg = compose_config(f"dataset={name}", *overrides)
    keys = OmegaConf.to_container(cfg.dataset, resolve=True)
    assert keys.pop("name") == name
    return load_dataset(name, **keys)


#: The guard's counts are those of the real files: tiny copies leave them unchecked.
TINY = {"expect.classes": None, "expect.train": None, "expect.test": None}


def write_mnist_layout(root: Path, n_train: int = 7, n_test: int = 3, gz: bool = True):
    """The four IDX files with random 28x28 images; returns the arrays written."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    root.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        write_idx(root / (f"{stem}.gz" if gz else stem), array)
    return arrays


# ------------------------------------------------------------------------------------------- IDX


def test_idx_header_layout_is_the_documented_one(tmp_path):
    path = write_idx(tmp_path / "x", np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8))
    assert path.read_bytes() == bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6])


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("name", ["plain", "packed.gz"])
def test_read_idx_round_trips_every_type(tmp_path, dtype, name):
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    tensor = read_idx(write_idx(tmp_path / name, array))
    assert tensor.shape == (2, 3, 4)
    np.testing.assert_array_equal(tensor.numpy(), array)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_reads_any_sample_count(tmp_path, gz):
    arrays = write_mnist_layout(tmp_path, n_train=7, n_test=3, gz=gz)
    data = load("fashion_mnist", root=tmp_path, **TINY)
    assert data.name == "fashion_mnist" and data.num_classes == 10
    assert data.train_images.shape == (7, 1, 28, 28) and data.test_images.shape == (3, 1, 28, 28)
    assert data.train_images.dtype == torch.uint8 and data.train_labels.dtype == torch.int64
    assert data.input_shape == (1, 28, 28)
    np.testing.assert_array_equal(data.train_images[:, 0].numpy(), arrays[IDX_FILES[0]])
    assert data.train_labels.tolist() == arrays[IDX_FILES[1]].tolist()
    np.testing.assert_array_equal(data.test_images[:, 0].numpy(), arrays[IDX_FILES[2]])
    assert data.test_labels.tolist() == arrays[IDX_FILES[3]].tolist()


def test_mnist_uses_the_same_reader_and_torchvision_layout(tmp_path):
    arrays = write_mnist_layout(tmp_path / "MNIST" / "raw", n_train=5, n_test=2)
    data = load("mnist", root=tmp_path, **TINY)
    assert data.name == "mnist"
    assert data.train_labels.tolist() == arrays[IDX_FILES[1]].tolist()
    assert data.test_images.shape == (2, 1, 28, 28)


def test_missing_directory_names_the_path_and_how_to_get_the_files(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as info:
        load("fashion_mnist", root=missing, **TINY)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("fashion_mnist: no train-images-idx3-ubyte(.gz) in ")
    assert str(missing) in message and "no such directory" in message
    assert "t10k-labels-idx1-ubyte" in message
    assert "https://github.com/zalandoresearch/fashion-mnist" in message
    assert f"dataset.root={DEBIAN_FASHION_MNIST}" in message


def test_missing_file_names_that_file(tmp_path):
    write_mnist_layout(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match=r"no t10k-labels-idx1-ubyte\(\.gz\) in "):
        load("fashion_mnist", root=tmp_path, **TINY)


def test_mnist_without_root_says_how_to_set_it():
    with pytest.raises(DatasetError, match=r"^mnist: no dataset\.root given; .*yann\.lecun\.com"):
        load("mnist", root=None)


def test_bad_magic_number_names_the_file(tmp_path):
    arrays = write_mnist_layout(tmp_path, gz=False)
    # Labels where images belong: a valid IDX file, but magic 0x801 instead of 0x803.
    write_idx(tmp_path / "train-images-idx3-ubyte", arrays["train-labels-idx1-ubyte"])
    with pytest.raises(DatasetError) as info:
        load("fashion_mnist", root=tmp_path, **TINY)
    message = str(info.value)
    assert message.startswith(f"fashion_mnist: {tmp_path / 'train-images-idx3-ubyte'}: ")
    assert "bad magic number 0x00000801, expected 0x00000803" in message


def test_not_an_idx_file_is_a_bad_magic_number(tmp_path):
    path = tmp_path / "junk"
    path.write_bytes(b"PK\x03\x04 not idx at all")
    with pytest.raises(DatasetError, match="junk: bad magic number 0x504b0304: not an IDX file"):
        read_idx(path)


def test_truncated_file_names_the_file(tmp_path):
    write_mnist_layout(tmp_path, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetError) as info:
        load("fashion_mnist", root=tmp_path, **TINY)
    message = str(info.value)
    assert str(path) in message and "truncated" in message
    assert f"holds {3 * 28 * 28 - 100} data bytes" in message and "2352 bytes" in message


def test_trailing_bytes_are_an_error(tmp_path):
    path = write_idx(tmp_path / "labels", np.zeros(4, dtype=np.uint8))
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(DatasetError, match="labels: trailing bytes: holds 5 data bytes"):
        read_idx(path)


def test_truncated_gzip_stream_names_the_file(tmp_path):
    path = write_idx(tmp_path / "images.gz", np.zeros((50, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DatasetError, match=r"images\.gz: cannot read it"):
        read_idx(path, IMAGES_MAGIC)


def test_not_gzip_despite_the_name(tmp_path):
    path = tmp_path / "images.gz"
    path.write_bytes(b"\0\0\x08\x01\0\0\0\x01\x07")
    with pytest.raises(DatasetError, match=r"images\.gz: cannot read it"):
        read_idx(path)


def test_mismatched_counts_and_out_of_range_labels(tmp_path):
    write_mnist_layout(tmp_path, n_train=7)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(6, dtype=np.uint8))
    with pytest.raises(DatasetError, match="holds 7 images but .* holds 6 labels"):
        load("fashion_mnist", root=tmp_path, **TINY)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.full(7, 10, dtype=np.uint8))
    with pytest.raises(DatasetError, match="holds label 10, expected labels 0..9"):
        load("fashion_mnist", root=tmp_path, **TINY)


def test_gzipped_and_plain_files_give_the_same_data(tmp_path):
    write_mnist_layout(tmp_path / "gz", gz=True)
    write_mnist_layout(tmp_path / "plain", gz=False)
    a = load("fashion_mnist", root=tmp_path / "gz", **TINY)
    b = load("fashion_mnist", root=tmp_path / "plain", **TINY)
    assert torch.equal(a.train_images, b.train_images) and torch.equal(a.test_labels, b.test_labels)
    with gzip.open(tmp_path / "gz" / "t10k-labels-idx1-ubyte.gz", "rb") as file:
        assert file.read() == (tmp_path / "plain" / "t10k-labels-idx1-ubyte").read_bytes()


def test_real_fashion_mnist():
    if not (FASHION_MNIST_ROOT / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(
            f"Fashion-MNIST is not in {FASHION_MNIST_ROOT}: install it with "
            "'apt-get install dataset-fashion-mnist' (Debian)"
        )
    data = load("fashion_mnist", root=FASHION_MNIST_ROOT)
    assert data.train_images.shape == (60000, 1, 28, 28)
    assert data.test_images.shape == (10000, 1, 28, 28)
    assert data.num_classes == 10
    assert torch.bincount(data.train_labels).tolist() == [6000] * 10
    assert torch.bincount(data.test_labels).tolist() == [1000] * 10
    mean, std = channel_stats(data.train_images)
    # The values biotorch normalizes Fashion-MNIST with.
    assert mean.item() == pytest.approx(0.2860, abs=1e-4)
    assert std.item() == pytest.approx(0.3530, abs=1e-4)


# ---------------------------------------------------------------------------------------- digits


def test_digits_shapes_split_and_stratification():
    data = load("digits")
    assert data.num_classes == 10 and data.input_shape == (1, 8, 8)
    assert len(data.train_labels) + len(data.test_labels) == 1797
    assert len(data.test_labels) == 359  # round(0.2 * 1797)
    assert data.train_images.dtype == torch.uint8
    assert int(data.train_images.max()) == 255 and int(data.train_images.min()) == 0
    train_counts = torch.bincount(data.train_labels, minlength=10)
    test_counts = torch.bincount(data.test_labels, minlength=10)
    fractions = test_counts.double() / (train_counts + test_counts)
    assert torch.all((fractions - 0.2).abs() < 0.01), fractions


def test_digits_are_deterministic_and_seeded():
    a, b = load("digits"), load("digits", split_seed=0)
    assert torch.equal(a.test_images, b.test_images) and torch.equal(a.test_labels, b.test_labels)
    c = load("digits", test_fraction=0.5, split_seed=1)
    assert len(c.test_labels) == 898  # round(0.5 * 1797) = 898 (banker's rounding of 898.5)
    assert not torch.equal(load("digits", split_seed=1).test_labels, a.test_labels)


def test_digits_pixels_are_scaled_sklearn_values():
    from sklearn.datasets import load_digits

    raw = load_digits().images  # values 0..16
    data = load("digits")
    pixels = torch.cat([data.train_images, data.test_images]).double() * 16 / 255
    ours = sorted(map(tuple, pixels.round().reshape(-1, 64).tolist()))
    theirs = sorted(map(tuple, raw.reshape(-1, 64).tolist()))
    assert ours == theirs


# ------------------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_and_shaped():
    a = load("synthetic", channels=3, size=5, train_size=40, test_size=20, seed=3)
    b = load("synthetic", channels=3, size=5, train_size=40, test_size=20, seed=3)
    c = load("synthetic", channels=3, size=5, train_size=40, test_size=20, seed=4)
    assert a.input_shape == (3, 5, 5) and a.train_images.dtype == torch.uint8
    assert len(a.train_labels) == 40 and len(a.test_labels) == 20
    assert torch.equal(a.train_images, b.train_images) and torch.equal(a.test_labels, b.test_labels)
    assert not torch.equal(a.train_images, c.train_images)
    assert torch.bincount(a.train_labels).tolist() == [4] * 10
    # The test set does not depend on the training set's size.
    d = load("synthetic", channels=3, size=5, train_size=90, test_size=20, seed=3)
    assert torch.equal(a.test_images, d.test_images)


def test_synthetic_is_learnable_by_nearest_class_mean():
    data = load("synthetic")
    train = data.train_images.reshape(len(data.train_labels), -1).float()
    test = data.test_images.reshape(len(data.test_labels), -1).float()
    means = torch.stack([train[data.train_labels == k].mean(0) for k in range(10)])
    predicted = torch.cdist(test, means).argmin(1)
    accuracy = (predicted == data.test_labels).float().mean().item()
    assert accuracy > 0.9, accuracy


def test_synthetic_rejects_bad_options():
    with pytest.raises(
        ValueError, match=r"^dataset.num_classes=1 is out of range: an integer >= 2$"
    ):
        load("synthetic", num_classes=1)
    with pytest.raises(ValueError, match="noise=-1 is out of range: a number >= 0"):
        load("synthetic", noise=-1)


# -------------------------------------------------------------------------------------- registry


def test_registry_lists_the_loaders_and_rejects_unknown_names():
    assert {"digits", "fashion_mnist", "mnist", "synthetic"} <= set(DATASETS)
    with pytest.raises(ValueError, match=r"^dataset='nope' is unknown: choose one of .*digits"):
        load_dataset("nope")
    with pytest.raises(ValueError, match="^dataset=digits has no option resolution: its options"):
        load_dataset("digits", resolution=3)


def test_register_dataset_adds_a_loader_and_refuses_a_clash():
    def tiny() -> InMemoryDataset:
        images = torch.zeros(2, 1, 2, 2, dtype=torch.uint8)
        labels = torch.tensor([0, 1])
        return InMemoryDataset("tiny", images, labels, images, labels, num_classes=2)

    try:
        register_dataset("_tiny_test")(tiny)
        assert load_dataset("_tiny_test").input_shape == (1, 2, 2)

        def other() -> InMemoryDataset:
            raise AssertionError

        with pytest.raises(ValueError, match="already registered"):
            register_dataset("_tiny_test")(other)
    finally:
        DATASETS.unregister("_tiny_test")


def test_a_loader_taking_decoding_gets_the_shared_keys_as_one_decoding():
    """The config keeps flat keys; the loader sees its own keys and one Decoding of the rest."""
    seen = {}

    def tiny(root: str, decoding: Decoding) -> InMemoryDataset:
        seen.update(root=root, decoding=decoding)
        images = torch.zeros(2, 1, 2, 2, dtype=torch.uint8)
        labels = torch.tensor([0, 1])
        return InMemoryDataset("tiny", images, labels, images, labels, num_classes=2)

    shared = {"image_size": 8, "channels": 1, "fit": "crop", "cache_dir": "/c"}
    try:
        assert register_dataset("_tiny_decoding")(tiny) is tiny
        assert DATASETS.accepted("_tiny_decoding") == ["root", *DECODING_KEYS]
        load_dataset("_tiny_decoding", root="/r", expect={"classes": 2}, cache=True, **shared)
        assert seen == {"root": "/r", "decoding": Decoding(8, 1, "crop", Expect(classes=2), "/c")}
        load_dataset("_tiny_decoding", root="/r", expect=None, cache=False, **shared)
        assert seen["decoding"] == Decoding(8, 1, "crop", Expect(), None)
        options = "root, image_size, channels, fit, expect, cache, cache_dir"
        message = f"^dataset=_tiny_decoding has no option size: its options are {options}$"
        with pytest.raises(ValueError, match=message):
            load_dataset("_tiny_decoding", root="/r", size=3, expect=None, cache=False, **shared)
    finally:
        DATASETS.unregister("_tiny_decoding")


def test_image_loaders_take_their_own_keys_and_one_decoding():
    for name in ("mnist", "fashion_mnist", "cifar10", "svhn", "caltech101", "lfw", "scene67"):
        keys = set(compose_config(f"dataset={name}").dataset) - {"name"}
        own = set(inspect.signature(DATASETS[name].__wrapped__).parameters)
        assert "decoding" in own and own - {"decoding"} == keys - set(DECODING_KEYS), name


def test_in_memory_dataset_validates_its_tensors():
    images = torch.zeros(3, 1, 2, 2, dtype=torch.uint8)
    with pytest.raises(ValueError, match="3 images .* but 2 labels"):
        InMemoryDataset("x", images, torch.tensor([0, 1]), images, torch.tensor([0, 1, 1]), 2)
    with pytest.raises(ValueError, match=r"labels span \[0, 2\], outside \[0, 2\)"):
        InMemoryDataset("x", images, torch.tensor([0, 1, 2]), images, torch.tensor([0, 1, 1]), 2)
    with pytest.raises(TypeError, match="int64"):
        InMemoryDataset("x", images, torch.tensor([0.0, 1, 1]), images, torch.tensor([0, 1, 1]), 2)
    with pytest.raises(ValueError, match="differ in shape"):
        InMemoryDataset(
            "x", images, torch.tensor([0, 1, 1]), images[:, :, :1], torch.tensor([0, 1, 1]), 2
        )
    features = InMemoryDataset(
        "f", torch.zeros(3, 13), torch.tensor([0, 1, 1]), torch.zeros(1, 13), torch.tensor([1]), 2
    )
    assert features.input_shape == (13,)
    assert repr(features) == (
        "InMemoryDataset(name='f', train=3, test=1, input_shape=(13,), dtype=torch.float32, "
        "num_classes=2)"
    )


# ------------------------------------------------------------------------------ stratified_split


def test_stratified_split_sizes_proportions_and_cover():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)[torch.randperm(100)]
    keep, heldout = stratified_split(labels, 0.2, seed=0)
    assert len(heldout) == 20 and len(keep) == 80
    assert torch.bincount(labels[heldout]).tolist() == [10, 6, 4]
    assert torch.equal(torch.cat([keep, heldout]).sort().values, torch.arange(100))
    assert set(keep.tolist()).isdisjoint(heldout.tolist())
    assert torch.equal(keep, keep.sort().values) and keep.dtype == torch.int64


def test_stratified_split_shares_the_remainder_and_keeps_both_sides():
    # 0.25 of 10, 10 and 3 samples: 2.5, 2.5, 0.75 -> floors 2, 2, 0, and round(5.75) = 6 total;
    # the two extra samples go to the largest remainder (class 2), then the tie 0 vs 1 to class 0.
    labels = torch.tensor([0] * 10 + [1] * 10 + [2] * 3)
    keep, heldout = stratified_split(labels, 0.25, seed=0)
    assert torch.bincount(labels[heldout]).tolist() == [3, 2, 1]
    # A class of 2 keeps one sample per side whatever the fraction; a class of 1 stays kept.
    labels = torch.tensor([0] * 2 + [1] * 2 + [2] + [3] * 20)
    for fraction in (0.01, 0.99):
        keep, heldout = stratified_split(labels, fraction, seed=1)
        held = torch.bincount(labels[heldout], minlength=4).tolist()
        kept = torch.bincount(labels[keep], minlength=4).tolist()
        assert held[:3] == [1, 1, 0] and kept[:3] == [1, 1, 1]
        assert 1 <= held[3] <= 19


def test_stratified_split_is_deterministic_per_seed():
    labels = torch.arange(200) % 4
    a = stratified_split(labels, 0.3, seed=7)
    b = stratified_split(labels, 0.3, seed=7)
    c = stratified_split(labels, 0.3, seed=8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1]) and len(a[1]) == len(c[1]) == 60


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_stratified_split_rejects_degenerate_fractions(fraction):
    with pytest.raises(ValueError, match="fraction must be in"):
        stratified_split(torch.arange(10) % 2, fraction, seed=0)


# --------------------------------------------------------------------------------- channel_stats


def test_channel_stats_uint8_in_unit_pixel_scale():
    # Channel 0 holds 0 and 255 (mean 0.5, std 0.5); channel 1 is constant 51 (0.2, std 0).
    images = torch.zeros(2, 2, 1, 2, dtype=torch.uint8)
    images[0, 0] = 0
    images[1, 0] = 255
    images[:, 1] = 51
    mean, std = channel_stats(images)
    assert mean.shape == std.shape == (2,) and mean.dtype == torch.float32
    assert mean.tolist() == pytest.approx([0.5, 0.2])
    assert std.tolist() == pytest.approx([0.5, 0.0], abs=1e-6)


def test_channel_stats_float_chunked_matches_numpy():
    values = torch.from_numpy(np.random.default_rng(1).normal(3.0, 2.0, (37, 3, 4, 4)))
    mean, std = channel_stats(values.float(), chunk_size=5)
    expected = values.numpy().transpose(1, 0, 2, 3).reshape(3, -1)
    np.testing.assert_allclose(mean.numpy(), expected.mean(1), rtol=1e-5)
    np.testing.assert_allclose(std.numpy(), expected.std(1), rtol=1e-5)
    # Hand-computed: values 1, 2, 3, 4 have mean 2.5 and population std sqrt(1.25).
    mean, std = channel_stats(torch.tensor([[1.0], [2.0], [3.0], [4.0]]))
    assert mean.item() == pytest.approx(2.5) and std.item() == pytest.approx(1.25**0.5)


def test_from_pool_splits_one_set_by_indices_or_slices():
    samples = torch.arange(6, dtype=torch.uint8).reshape(6, 1, 1, 1) * 10
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    data = InMemoryDataset.from_pool("p", samples, labels, torch.tensor([0, 3, 4]),
                                     torch.tensor([1, 5]), num_classes=2)  # fmt: skip
    assert data.train_images.flatten().tolist() == [0, 30, 40]
    assert data.train_labels.tolist() == [0, 1, 0]
    assert data.test_images.flatten().tolist() == [10, 50] and data.test_labels.tolist() == [1, 1]
    cut = InMemoryDataset.from_pool("p", samples, labels, slice(None, 4), slice(4, None), 2)
    assert cut.train_labels.tolist() == [0, 1, 0, 1] and cut.test_images.flatten().tolist() == [
        40,
        50,
    ]
    with pytest.raises(ValueError, match="outside"):  # the dataset's own checks still run
        InMemoryDataset.from_pool("p", samples, labels, slice(None, 4), slice(4, None), 1)

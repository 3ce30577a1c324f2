"""Dataset loaders: shapes, splits, statistics, and the errors users meet with bad data."""

from __future__ import annotations

import pickle
import random
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from core.data import (
    DATASETS,
    DatasetError,
    Split,
    channel_stats,
    load_dataset,
    load_inputs,
    resolve_under,
    stratified_pick,
    validate_npz,
)
from core.data.builtin import _mnist1d_arrays
from core.errors import DataMissingError, SpecError
from core.spec import (
    DigitsData,
    ImageFolderData,
    MNIST1DData,
    NpzData,
    SyntheticData,
    TorchvisionData,
)

ALL_KINDS = {
    "mnist1d",
    "digits",
    "synthetic",
    "mnist",
    "fashion_mnist",
    "cifar10",
    "cifar100",
    "svhn",
    "imagefolder",
    "npz",
}


def test_every_kind_has_a_loader() -> None:
    assert set(DATASETS.names()) == ALL_KINDS


def test_dataset_error_is_a_spec_error() -> None:
    assert issubclass(DatasetError, SpecError)
    assert DatasetError.type == "bad_dataset"


# ---------------------------------------------------------------- built-in datasets


def test_mnist1d(tmp_path: Path) -> None:
    _mnist1d_arrays.cache_clear()  # make sure the generator really runs here
    random.seed(123)
    np.random.seed(123)
    data = load_dataset(MNIST1DData(), tmp_path, seed=0)
    drawn = (random.random(), np.random.random())
    random.seed(123)
    np.random.seed(123)
    # The generator seeds the global RNGs; loading must leave them as they were.
    assert drawn == (random.random(), np.random.random())

    assert (len(data.train), len(data.val), len(data.test)) == (3600, 400, 1000)
    assert data.train.x.shape == (3600, 40) and data.train.x.dtype == torch.float32
    assert data.train.y.dtype == torch.int64
    assert data.input_shape == (40,) and not data.is_image
    assert data.num_classes == 10 and data.classes == [str(i) for i in range(10)]
    assert len(data.mean) == len(data.std) == 1
    again = load_dataset(MNIST1DData(), tmp_path, seed=0)
    assert torch.equal(data.train.x, again.train.x) and torch.equal(data.val.y, again.val.y)


def test_mnist1d_seed_and_no_val(tmp_path: Path) -> None:
    whole = load_dataset(MNIST1DData(val_fraction=0.0), tmp_path, seed=0)
    assert len(whole.train) == 4000
    assert whole.val is whole.test  # documented: no carving means validation on the test split
    other = load_dataset(MNIST1DData(val_fraction=0.0, seed=7), tmp_path, seed=0)
    assert not torch.equal(whole.train.x, other.train.x)


def test_digits(tmp_path: Path) -> None:
    data = load_dataset(DigitsData(), tmp_path, seed=0)
    assert len(data.test) == 360 and len(data.train) + len(data.val) == 1797 - 360
    assert data.train.x.shape[1:] == (1, 8, 8) and data.train.x.dtype == torch.float32
    assert data.input_shape == (1, 8, 8) and data.is_image
    assert float(data.train.x.max()) == 16.0
    assert len(data.mean) == 1
    # Stratified: every class appears in the test split in about its share.
    assert torch.bincount(data.test.y).min() >= 34
    other = load_dataset(DigitsData(split_seed=1), tmp_path, seed=0)
    assert not torch.equal(data.test.x, other.test.x)
    assert torch.equal(data.test.x, load_dataset(DigitsData(), tmp_path, seed=0).test.x)


def test_synthetic_shapes_and_determinism(tmp_path: Path) -> None:
    spec = SyntheticData(num_classes=4, channels=1, size=12, train_size=100, test_size=40, val_fraction=0.2)
    data = load_dataset(spec, tmp_path, seed=0)
    assert data.train.x.shape == (80, 1, 12, 12) and data.train.x.dtype == torch.uint8
    assert (len(data.val), len(data.test)) == (20, 40)
    assert data.num_classes == 4 and data.input_shape == (1, 12, 12)
    assert torch.bincount(data.test.y).tolist() == [10, 10, 10, 10]  # balanced
    assert torch.equal(data.train.x, load_dataset(spec, tmp_path, seed=0).train.x)
    other = load_dataset(spec.model_copy(update={"seed": 1}), tmp_path, seed=0)
    assert not torch.equal(data.test.x, other.test.x)


def test_synthetic_is_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    data = load_dataset(SyntheticData(train_size=2000), tmp_path, seed=0)
    assert time.perf_counter() - start < 1.0
    assert data.train.x.shape[1:] == (3, 32, 32) and len(data.mean) == 3


def test_synthetic_is_learnable_but_not_trivial(tmp_path: Path) -> None:
    spec = SyntheticData(num_classes=5, size=16, train_size=500, test_size=200, val_fraction=0.0)
    data = load_dataset(spec, tmp_path, seed=0)
    train_x, test_x = data.train.x.flatten(1).float(), data.test.x.flatten(1).float()
    means = torch.stack([train_x[data.train.y == k].mean(0) for k in range(5)])
    accuracy = (torch.cdist(test_x, means).argmin(1) == data.test.y).float().mean().item()
    assert 0.4 < accuracy < 1.0  # chance is 0.2


def test_noise_makes_synthetic_harder(tmp_path: Path) -> None:
    def accuracy(noise: float) -> float:
        spec = SyntheticData(num_classes=5, size=16, train_size=500, test_size=200, noise=noise)
        data = load_dataset(spec.model_copy(update={"val_fraction": 0.0}), tmp_path, seed=0)
        train_x, test_x = data.train.x.flatten(1).float(), data.test.x.flatten(1).float()
        means = torch.stack([train_x[data.train.y == k].mean(0) for k in range(5)])
        return (torch.cdist(test_x, means).argmin(1) == data.test.y).float().mean().item()

    assert accuracy(0.0) > accuracy(4.0)


# ---------------------------------------------------------------- splits and statistics


def test_stratified_pick_hand_computed() -> None:
    y = torch.tensor([0] * 6 + [1] * 3 + [2])
    picked, rest = stratified_pick(y, 5, torch.Generator().manual_seed(0))
    # Quotas 3, 1.5, 0.5: floors 3, 1, 0; the one row owed goes to the first largest remainder.
    assert torch.bincount(y[picked], minlength=3).tolist() == [3, 2, 0]
    assert sorted(torch.cat([picked, rest]).tolist()) == list(range(10))
    assert picked.tolist() == sorted(picked.tolist())


def test_val_carving_is_stratified_and_seeded(tmp_path: Path) -> None:
    spec = SyntheticData(num_classes=4, size=8, train_size=200, test_size=20, val_fraction=0.25)
    full = load_dataset(spec.model_copy(update={"val_fraction": 0.0}), tmp_path, seed=0).train
    a, b = load_dataset(spec, tmp_path, seed=0), load_dataset(spec, tmp_path, seed=0)
    c = load_dataset(spec, tmp_path, seed=1)
    assert (len(a.train), len(a.val)) == (150, 50)
    # 12.5 rows owed per class: floors of 12, and the 2 rows left go to the first tied classes.
    assert torch.bincount(a.val.y).tolist() == [13, 13, 12, 12]
    assert torch.equal(a.val.x, b.val.x) and not torch.equal(a.val.x, c.val.x)
    # Train and val partition the source's training rows.
    rows = {bytes(x.numpy()) for x in full.x}
    carved = [bytes(x.numpy()) for x in torch.cat([a.train.x, a.val.x])]
    assert len(carved) == len(full) and set(carved) == rows


def test_train_limit_after_val(tmp_path: Path) -> None:
    spec = SyntheticData(num_classes=4, size=8, train_size=200, test_size=20, val_fraction=0.25)
    unlimited = load_dataset(spec, tmp_path, seed=0)
    limited = load_dataset(spec.model_copy(update={"train_limit": 40}), tmp_path, seed=0)
    assert len(limited.train) == 40 and torch.bincount(limited.train.y).tolist() == [10, 10, 10, 10]
    assert torch.equal(limited.val.x, unlimited.val.x)  # the limit never moves validation rows
    kept = {bytes(x.numpy()) for x in unlimited.train.x}
    assert all(bytes(x.numpy()) in kept for x in limited.train.x)
    big = load_dataset(spec.model_copy(update={"train_limit": 10_000}), tmp_path, seed=0)
    assert len(big.train) == 150
    inputs = load_inputs(spec.model_copy(update={"train_limit": 40}), tmp_path, seed=0)
    assert torch.equal(inputs, limited.train.x)


def test_channel_stats_hand_computed() -> None:
    x = torch.zeros(2, 2, 1, 2, dtype=torch.uint8)
    x[:, 1] = torch.tensor([[[0, 2]], [[4, 6]]], dtype=torch.uint8)  # values 0, 2, 4, 6
    mean, std = channel_stats(x)
    assert mean == (0.0, 3.0)
    assert std[0] == 1e-6  # a constant channel is floored, never zero
    assert std[1] == pytest.approx(5**0.5)  # population std of 0, 2, 4, 6
    signal_mean, signal_std = channel_stats(torch.tensor([[1.0, 3.0], [5.0, 7.0]]))
    assert signal_mean == (4.0,) and signal_std[0] == pytest.approx(5**0.5)


def test_channel_stats_far_from_zero() -> None:
    x = (1e6 + torch.arange(10, dtype=torch.float64)).float().reshape(5, 2)
    mean, std = channel_stats(x)
    # Exact in float32 (integers below 2**24); sum-of-squares arithmetic would lose the variance.
    assert mean[0] == pytest.approx(1e6 + 4.5) and std[0] == pytest.approx(np.std(np.arange(10.0)))


def test_stats_are_on_the_final_training_split(tmp_path: Path) -> None:
    spec = SyntheticData(num_classes=3, size=8, train_size=90, test_size=30, train_limit=30)
    data = load_dataset(spec, tmp_path, seed=0)
    expected = data.train.x.double().mean(dim=(0, 2, 3))
    assert data.mean == pytest.approx(expected.tolist())


# ---------------------------------------------------------------- torchvision datasets

EXPECTED = {
    "mnist": "MNIST/raw/train-images-idx3-ubyte",
    "fashion_mnist": "FashionMNIST/raw/t10k-labels-idx1-ubyte",
    "cifar10": "cifar-10-batches-py/data_batch_5",
    "cifar100": "cifar-100-python/train",
    "svhn": "test_32x32.mat",
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_torchvision_missing_files_are_named(tmp_path: Path, kind: str) -> None:
    with pytest.raises(DataMissingError) as caught:
        load_dataset(TorchvisionData(kind=kind), tmp_path, seed=0)
    message = str(caught.value)
    assert str(tmp_path / kind / EXPECTED[kind]) in message
    assert "download: true" in message
    assert not any(p.is_file() for p in tmp_path.rglob("*"))  # nothing was fetched


def _write_idx(path: Path, array: np.ndarray) -> None:
    """The raw (uncompressed) idx format of the MNIST files: magic, big-endian dims, uint8 data."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _fake_mnist(raw: Path, n_train: int = 20, n_test: int = 6) -> dict[str, np.ndarray]:
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    for name, array in arrays.items():
        _write_idx(raw / name, array)
    return arrays


def test_mnist_reads_local_idx_files(tmp_path: Path) -> None:
    arrays = _fake_mnist(tmp_path / "mnist" / "MNIST" / "raw")
    data = load_dataset(TorchvisionData(kind="mnist", val_fraction=0.0), tmp_path, seed=0)
    assert data.train.x.shape == (20, 1, 28, 28) and data.train.x.dtype == torch.uint8
    assert data.train.y.dtype == torch.int64 and data.input_shape == (1, 28, 28)
    assert np.array_equal(data.test.x[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    assert data.train.y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert data.num_classes == 10 and data.classes[0] == "0 - zero"


def test_fashion_mnist_from_a_custom_folder(tmp_path: Path) -> None:
    _fake_mnist(tmp_path / "fm" / "FashionMNIST" / "raw")
    data = load_dataset(TorchvisionData(kind="fashion_mnist", folder="fm"), tmp_path, seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (18, 2, 6)
    assert data.classes[-1] == "Ankle boot"


def test_mnist_unreadable_file(tmp_path: Path) -> None:
    _fake_mnist(tmp_path / "mnist" / "MNIST" / "raw")
    (tmp_path / "mnist" / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"not an idx file")
    with pytest.raises(DatasetError, match="cannot be read"):
        load_dataset(TorchvisionData(kind="mnist"), tmp_path, seed=0)


# ---------------------------------------------------------------- image folders


def _image_tree(base: Path, splits: dict[str, dict[str, int]]) -> None:
    rng = np.random.default_rng(0)
    for split, classes in splits.items():
        for name, count in classes.items():
            folder = base / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")


def test_imagefolder(tmp_path: Path) -> None:
    _image_tree(tmp_path / "pets", {"train": {"cat": 4, "dog": 2}, "test": {"cat": 1, "dog": 2}})
    (tmp_path / "pets" / "train" / "cat" / "notes.txt").write_text("ignored: not an image")
    spec = ImageFolderData(path="pets", image_size=8, val_fraction=0.0)
    data = load_dataset(spec, tmp_path, seed=0)
    assert data.classes == ["cat", "dog"] and data.num_classes == 2
    assert data.train.x.shape == (6, 3, 8, 8) and data.train.x.dtype == torch.uint8
    assert data.train.y.tolist() == [0, 0, 0, 0, 1, 1] and data.test.y.tolist() == [0, 1, 1]
    grey = load_dataset(spec.model_copy(update={"channels": 1}), tmp_path, seed=0)
    assert grey.input_shape == (1, 8, 8) and len(grey.mean) == 1


def test_imagefolder_val_folder_replaces_carving(tmp_path: Path) -> None:
    tree = {"train": {"a": 3, "b": 3}, "val": {"a": 1, "b": 1}, "test": {"a": 1, "b": 1}}
    _image_tree(tmp_path / "set", tree)
    data = load_dataset(ImageFolderData(path="set", image_size=8, val_fraction=0.5), tmp_path, seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (6, 2, 2)


def test_imagefolder_problems(tmp_path: Path) -> None:
    _image_tree(tmp_path / "only_train", {"train": {"a": 1, "b": 1}})
    with pytest.raises(DataMissingError, match="only_train/test"):
        load_dataset(ImageFolderData(path="only_train"), tmp_path, seed=0)

    _image_tree(tmp_path / "mismatch", {"train": {"a": 2, "b": 2}, "test": {"a": 1, "c": 1}})
    with pytest.raises(DatasetError, match=r"not in train/: \['c'\]; missing here: \['b'\]"):
        load_dataset(ImageFolderData(path="mismatch"), tmp_path, seed=0)

    _image_tree(tmp_path / "broken", {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}})
    (tmp_path / "broken" / "train" / "b" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"bad\.png"):
        load_dataset(ImageFolderData(path="broken"), tmp_path, seed=0)

    _image_tree(tmp_path / "empty_class", {"train": {"a": 2}, "test": {"a": 1}})
    (tmp_path / "empty_class" / "train" / "b").mkdir()
    (tmp_path / "empty_class" / "test" / "b").mkdir()
    with pytest.raises(DatasetError, match="holds no images"):
        load_dataset(ImageFolderData(path="empty_class"), tmp_path, seed=0)


def test_paths_cannot_leave_the_data_root(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    _image_tree(outside, {"train": {"a": 1, "b": 1}, "test": {"a": 1, "b": 1}})
    root.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(SpecError, match="outside the data root"):
        load_dataset(ImageFolderData(path="link"), root, seed=0)
    with pytest.raises(SpecError, match="outside the data root"):
        resolve_under(root, "../outside")
    np.savez(outside / "data.npz", **_good_arrays())
    (root / "data.npz").symlink_to(outside / "data.npz")
    with pytest.raises(SpecError, match="outside the data root"):
        load_dataset(NpzData(path="data.npz"), root, seed=0)


# ---------------------------------------------------------------- npz archives


def _good_arrays(**changes: Any) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    arrays: dict[str, Any] = {
        "x_train": rng.integers(0, 256, (30, 6, 6), dtype=np.uint8),
        "y_train": np.arange(30) % 3,
        "x_test": rng.integers(0, 256, (9, 6, 6), dtype=np.uint8),
        "y_test": np.arange(9) % 3,
    }
    arrays.update(changes)
    return {k: v for k, v in arrays.items() if v is not None}


def _npz(tmp_path: Path, **changes: Any) -> Path:
    path = tmp_path / "data.npz"
    np.savez(path, **_good_arrays(**changes))
    return path


def test_npz_good_archive(tmp_path: Path) -> None:
    _npz(tmp_path)
    data = load_dataset(NpzData(path="data.npz", val_fraction=0.2), tmp_path, seed=0)
    assert data.train.x.shape == (24, 1, 6, 6) and data.train.x.dtype == torch.uint8  # channel added
    assert (len(data.val), len(data.test)) == (6, 9) and data.num_classes == 3
    assert data.classes == ["0", "1", "2"] and data.train.y.dtype == torch.int64


def test_npz_signals_become_float32_and_val_is_used(tmp_path: Path) -> None:
    x = np.linspace(0, 1, 30 * 5).reshape(30, 5)
    _npz(tmp_path, x_train=x, x_test=x[:9], x_val=x[:4], y_val=np.array([0, 1, 2, 3]))
    data = load_dataset(NpzData(path="data.npz"), tmp_path, seed=0)
    assert data.train.x.dtype == torch.float32 and data.input_shape == (5,)
    assert len(data.train) == 30 and len(data.val) == 4 and data.num_classes == 4


def test_validate_npz_summary(tmp_path: Path) -> None:
    summary = validate_npz(_npz(tmp_path))
    assert summary == {
        "train_size": 30,
        "val_size": None,
        "test_size": 9,
        "input_shape": [1, 6, 6],
        "dtype": "uint8",
        "num_classes": 3,
        "train_class_counts": [10, 10, 10],
    }


BAD_ARCHIVES: dict[str, tuple[dict[str, Any], str]] = {
    "missing key": ({"y_test": None}, r"lacks array\(s\) y_test; it holds: x_train, y_train, x_test"),
    "lengths": ({"y_train": np.arange(29) % 3}, "x_train has 30 rows but y_train has 29"),
    "object array": ({"x_test": np.array([1, "a"], dtype=object)}, "object array"),
    "nan": ({"x_test": np.full((9, 6, 6), np.nan)}, "x_test contains 324 NaN or infinite"),
    "inf": ({"x_train": np.full((30, 4), np.inf), "x_test": np.zeros((9, 4))}, "x_train contains 120"),
    "negative label": ({"y_test": np.arange(9) % 3 - 1}, "y_test has negative labels"),
    "huge label": ({"y_test": np.full(9, 10**9)}, "class indices below"),
    "shapes": ({"x_test": np.zeros((9, 1, 7, 6), np.uint8)}, r"x_test samples are \(1, 7, 6\)"),
    "dtypes": ({"x_test": np.zeros((9, 6, 6), np.float32)}, "share one sample shape and dtype"),
    "float labels": ({"y_train": np.zeros(30)}, "labels must be a 1-D integer array"),
    "2-D labels": ({"y_train": np.zeros((30, 1), int)}, "labels must be a 1-D integer array"),
    "rank 5": ({"x_train": np.zeros((30, 1, 1, 6, 6))}, "expected \\(N, L\\) signals"),
    "strings": ({"x_train": np.array(["a"] * 30)}, "inputs must be numeric"),
    "channels last": (
        {"x_train": np.zeros((30, 32, 32, 3), np.uint8), "x_test": np.zeros((9, 32, 32, 3), np.uint8)},
        "channels-last",
    ),
    "one class": ({"y_train": np.zeros(30, int), "y_test": np.zeros(9, int)}, "at least two classes"),
    "val half": ({"x_val": np.zeros((2, 6, 6), np.uint8)}, "give both x_val and y_val"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARCHIVES))
def test_npz_bad_archives(tmp_path: Path, case: str) -> None:
    changes, message = BAD_ARCHIVES[case]
    path = _npz(tmp_path, **changes)
    with pytest.raises(DatasetError, match=message):
        validate_npz(path)
    with pytest.raises(DatasetError, match=message):
        load_dataset(NpzData(path="data.npz"), tmp_path, seed=0)


def test_npz_refuses_pickles_and_other_files(tmp_path: Path) -> None:
    (tmp_path / "pickle.npz").write_bytes(pickle.dumps({"x_train": [1, 2, 3]}))
    with pytest.raises(DatasetError, match="pickled content is never loaded"):
        validate_npz(tmp_path / "pickle.npz")
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(DatasetError, match=r"single \.npy array"):
        validate_npz(tmp_path / "single.npy")
    with pytest.raises(DataMissingError, match="does not exist"):
        load_dataset(NpzData(path="absent.npz"), tmp_path, seed=0)


def test_split_rejects_mismatched_rows() -> None:
    with pytest.raises(ValueError):
        Split(torch.zeros(3, 2), torch.zeros(2, dtype=torch.int64))

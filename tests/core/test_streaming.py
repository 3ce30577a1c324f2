"""Datasets larger than memory: the loader choice, streamed samples, memory-mapped archives, and
the same job through the memory and the streaming paths."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from core.data import DatasetError, load_dataset
from core.data.samples import ArrayRows, ImageFiles, Samples, TrainingLoader
from core.errors import SpecError
from core.runner import run_job
from core.spec import ImageFolderData, MNIST1DData, NpzData, parse_spec


def shapes_folder(base: Path, per_class: dict[str, int], size: int = 24) -> None:
    """Three classes told apart by where a bright square sits, JPEG-compressed like photos."""
    rng = np.random.default_rng(0)
    corners = {"a": (2, 2), "b": (size // 2, size // 2), "c": (2, size // 2)}
    for split, count in per_class.items():
        for name, (top, left) in corners.items():
            folder = base / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
                pixels[top : top + size // 3, left : left + size // 3] = 230
                Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    shapes_folder(root / "shapes", {"train": 60, "test": 20})
    return root


def tensor(x: torch.Tensor | Samples) -> torch.Tensor:
    assert isinstance(x, torch.Tensor)
    return x


def folder(**changes: Any) -> ImageFolderData:
    return ImageFolderData(path="shapes", image_size=12, **changes)


# ---------------------------------------------------------------- the choice


def test_auto_keeps_what_fits_in_memory_and_streams_the_rest(root: Path) -> None:
    decoded = (180 + 60) * 3 * 12 * 12  # train (val carved from it) and test, uint8
    fits = load_dataset(folder(), root, seed=0, budget=decoded)
    assert isinstance(fits.train.x, torch.Tensor) and fits.loader is not None
    assert fits.loader.mode == "memory" and fits.loader.decoded_bytes == decoded
    assert "fits the memory budget" in fits.loader.reason

    streams = load_dataset(folder(), root, seed=0, budget=decoded - 1)
    assert isinstance(streams.train.x, Samples) and streams.loader is not None
    assert streams.loader.mode == "stream" and streams.loader.workers >= 1
    assert "exceeds the memory budget" in streams.loader.reason
    # the same rows either way: the same splits, and each row decodes to the same pixels
    assert torch.equal(fits.train.y, streams.train.y) and torch.equal(fits.val.y, streams.val.y)
    assert torch.equal(fits.train.x[:7], streams.train.x[:7])
    assert torch.equal(tensor(fits.test.x), torch.cat(list(streams.test.x.split(16))))
    assert fits.mean == pytest.approx(streams.mean) and fits.std == pytest.approx(streams.std)


def test_the_spec_can_force_either_path_and_transforms_stream(root: Path) -> None:
    forced = load_dataset(folder(loader={"mode": "stream", "workers": 0}), root, seed=0, budget=1 << 40)
    assert forced.loader is not None and forced.loader.mode == "stream"
    assert forced.loader.reason == "data.loader.mode is stream" and forced.loader.workers == 0
    memory = load_dataset(folder(loader={"mode": "memory"}), root, seed=0, budget=0)
    assert memory.loader is not None and memory.loader.mode == "memory"
    crops = load_dataset(folder(transforms="standard"), root, seed=0, budget=1 << 40)
    assert crops.loader is not None and crops.loader.mode == "stream"
    assert "drawn per sample" in crops.loader.reason
    with pytest.raises(SpecError, match="needs the streaming loader"):
        parse_spec(
            {
                "data": {
                    "kind": "imagefolder",
                    "path": "x",
                    "transforms": "standard",
                    "loader": {"mode": "memory"},
                }
            }
        )


def test_generated_data_stays_in_memory(tmp_path: Path) -> None:
    data = load_dataset(MNIST1DData(loader={"mode": "stream"}), tmp_path, seed=0, budget=0)
    assert data.loader is not None and data.loader.mode == "memory"
    assert "generated in memory" in data.loader.reason


def test_the_budget_comes_from_the_environment(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLERY_DATA_MEMORY_BYTES", "1000")
    data = load_dataset(folder(), root, seed=0)
    assert data.loader is not None and data.loader.budget_bytes == 1000 and data.loader.mode == "stream"
    monkeypatch.setenv("DISTILLERY_DATA_MEMORY_BYTES", "lots")
    with pytest.raises(DatasetError, match="DISTILLERY_DATA_MEMORY_BYTES='lots' is not a number"):
        load_dataset(folder(), root, seed=0)


# ---------------------------------------------------------------- samples


def test_training_reads_are_the_same_whichever_worker_decodes_them(root: Path) -> None:
    data = load_dataset(folder(transforms="standard"), root, seed=3, budget=0)
    x = data.train.x
    assert isinstance(x, ImageFiles)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    batches = {}
    for workers in (0, 2):
        x.workers = workers
        loader = TrainingLoader(x, 16, len(x) // 16, torch.device("cpu"))
        batches[workers] = [(b.clone(), i.clone()) for b, i in loader.epoch(1, order, first=2)]
    assert len(batches[0]) == len(x) // 16 - 2
    for (b0, i0), (b2, i2) in zip(batches[0], batches[2], strict=True):
        assert torch.equal(i0, i2) and torch.equal(b0, b2)
    assert torch.equal(batches[0][0][1], order[32:48])
    # another epoch draws other crops of the same rows; evaluation reads never crop at random
    again = next(iter(TrainingLoader(x, 16, 3, torch.device("cpu")).epoch(2, order, first=2)))[0]
    assert not torch.equal(again, batches[0][0][0])
    assert torch.equal(x[:4], x[:4])


def test_a_data_parallel_rank_reads_its_share_of_each_batch(root: Path) -> None:
    x = load_dataset(folder(), root, seed=0, budget=0).train.x
    assert isinstance(x, Samples)
    x.workers = 0
    order = torch.arange(len(x)).flip(0)
    shares = [
        [i for _, i in TrainingLoader(x, 8, 4, torch.device("cpu"), rank=r, world=2).epoch(1, order, 0)]
        for r in (0, 1)
    ]
    for step, (a, b) in enumerate(zip(*shares, strict=True)):
        whole = order[step * 8 : (step + 1) * 8]
        assert torch.equal(a, whole[0::2]) and torch.equal(b, whole[1::2])


def test_a_broken_image_is_named_without_the_worker_traceback(tmp_path: Path) -> None:
    shapes_folder(tmp_path / "shapes", {"train": 4, "test": 2})
    broken = tmp_path / "shapes" / "train" / "a" / "1.jpg"
    broken.write_bytes(b"not a jpeg")
    images = ImageFiles(sorted((tmp_path / "shapes" / "train").rglob("*.jpg")), 3, 8)
    images.workers = 1  # decoded in a worker process
    with pytest.raises(DatasetError) as caught:
        list(images.split(2))
    assert str(caught.value).startswith(f"cannot read image {broken}")
    assert "Traceback" not in str(caught.value)
    # the whole dataset refuses to load when its statistics meet the file
    with pytest.raises(DatasetError, match=r"1\.jpg"):
        load_dataset(folder(loader={"mode": "stream"}), tmp_path, seed=0, budget=0)


# ---------------------------------------------------------------- archives


def _archive(path: Path, compressed: bool) -> None:
    rng = np.random.default_rng(0)
    arrays: dict[str, Any] = {
        "x_train": rng.integers(0, 255, (50, 1, 6, 6), dtype=np.uint8),
        "y_train": rng.integers(0, 3, 50),
        "x_test": rng.integers(0, 255, (10, 1, 6, 6), dtype=np.uint8),
        "y_test": rng.integers(0, 3, 10),
    }
    (np.savez_compressed if compressed else np.savez)(path, **arrays)


def test_an_uncompressed_archive_is_memory_mapped(tmp_path: Path) -> None:
    _archive(tmp_path / "plain.npz", compressed=False)
    data = load_dataset(NpzData(path="plain.npz", val_fraction=0.2), tmp_path, seed=0, budget=0)
    x = data.train.x
    assert isinstance(x, ArrayRows) and isinstance(x.array, np.memmap)
    with np.load(tmp_path / "plain.npz") as archive:
        whole = torch.from_numpy(archive["x_train"])
    rows = load_dataset(NpzData(path="plain.npz", val_fraction=0.2), tmp_path, seed=0, budget=1 << 30)
    assert torch.equal(tensor(rows.train.x), torch.cat(list(x.split(7))))  # memory and mapped agree
    kept = torch.cat([tensor(rows.train.x), tensor(rows.val.x)])
    assert torch.equal(whole.int().sum(0), kept.int().sum(0))  # every row, once, in one split


def test_a_compressed_archive_is_read_whole_and_says_so(tmp_path: Path) -> None:
    _archive(tmp_path / "packed.npz", compressed=True)
    with zipfile.ZipFile(tmp_path / "packed.npz") as zf:
        assert all(info.compress_type == zipfile.ZIP_DEFLATED for info in zf.infolist())
    data = load_dataset(NpzData(path="packed.npz", loader={"mode": "stream"}), tmp_path, seed=0)
    assert data.loader is not None and "x_train" in data.loader.reason and "np.savez" in data.loader.reason
    assert not isinstance(data.train.x.array, np.memmap)  # type: ignore[union-attr]


# ---------------------------------------------------------------- a job both ways


def _job(mode: str) -> dict[str, Any]:
    return {
        "seed": 1,
        "data": {
            "kind": "imagefolder",
            "path": "shapes",
            "image_size": 12,
            "loader": {"mode": mode, "workers": 1},
        },
        "teacher": {"model": {"kind": "cnn", "channels": [8, 16]}, "train": {"epochs": 2, "batch_size": 30}},
        "student": {"model": {"kind": "mlp", "hidden": [24]}},
        "distill": {"epochs": 2, "batch_size": 30},
        "export": ["torchscript"],
        "runtime": {"measure_speed": False},
    }


def test_memory_and_streaming_give_the_same_accuracy(root: Path, tmp_path: Path) -> None:
    reports = {
        mode: run_job(parse_spec(_job(mode)), tmp_path / mode, data_root=root, device="cpu")
        for mode in ("memory", "stream")
    }
    memory, stream = reports["memory"], reports["stream"]
    assert memory.dataset.loader is not None and memory.dataset.loader.mode == "memory"
    assert stream.dataset.loader is not None and stream.dataset.loader.mode == "stream"
    for who in ("teacher", "student"):
        a, b = getattr(memory, who).test_top1, getattr(stream, who).test_top1
        assert abs(a - b) <= 0.05, (who, a, b)  # 60 test images: within noise
    assert stream.student.test_top1 > 0.6  # and both learned the task (chance is 1/3)

"""The ``.npz`` dataset archive format, checked with NumPy alone (no torch).

An archive holds ``x_train``, ``y_train``, ``x_test``, ``y_test`` and optionally ``x_val`` with
``y_val``. Archives often come from users (``POST /v1/datasets``), so they are read without
pickle and checked thoroughly: each problem is an ``NpzFormatError`` (a ``ValueError``) that
names the array and says what is expected.

The checks run in two passes, so that a hostile archive costs little to refuse:

1. From the headers alone, before anything is decompressed: each zip entry's declared size
   against ``max_bytes``, then each array's ``.npy`` header (dtype, shape, order), whose shape
   must account for exactly the bytes the entry declares. Shapes, dtypes and row counts are
   checked here too.
2. The values, streamed a few megabytes of rows at a time: finite inputs, labels in range.

The API checks uploads with ``check_npz`` (memory bounded by the chunk size, whatever the
archive's size); the engine's loader reads the arrays whole with ``read_npz`` and runs the same
checks on them, so both accept exactly the same archives, with the same messages.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

REQUIRED_KEYS = ("x_train", "y_train", "x_test", "y_test")
VAL_KEYS = ("x_val", "y_val")  # optional: a validation split used instead of carving one
SPLITS = ("train", "val", "test")
MAX_CLASSES = 100_000  # labels are class indices; a label of 10**9 is a mistake, not 10**9 classes
CHUNK_BYTES = 8 << 20  # how much of an array a streamed check holds at once
_NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float

Splits = dict[str, tuple[np.ndarray, np.ndarray]]
Chunks = Callable[[str], Iterator[np.ndarray]]  # an array's values, a block of rows at a time


class NpzFormatError(ValueError):
    """The archive cannot be used as a dataset; ``array`` names the offending array, if one."""

    type = "bad_dataset"

    def __init__(self, message: str, array: str | None = None) -> None:
        super().__init__(message)
        self.array = array


class NotAnArchiveError(NpzFormatError):
    """Not an ``.npz`` archive of plain arrays (a pickle, a single ``.npy``, anything else)."""


class MissingArrayError(NpzFormatError):
    """A required array is absent, or only half of the optional validation pair is given."""


class BadArrayError(NpzFormatError):
    """An array is present but has the wrong dtype, shape, length or values."""


@dataclass(frozen=True)
class Header:
    """What an entry's ``.npy`` header says, checked against the entry's declared size."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    info: zipfile.ZipInfo

    @property
    def row_bytes(self) -> int:
        return math.prod(self.shape[1:]) * self.dtype.itemsize


# ---------------------------------------------------------------- pass 1: headers


def _open_zip(path: Path, label: str) -> zipfile.ZipFile:
    if not path.is_file():
        raise FileNotFoundError(f"dataset archive {path} does not exist (or is not a file)")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        with path.open("rb") as f:
            single = f.read(6) == b"\x93NUMPY"
        if single:
            raise NotAnArchiveError(f"{label} is a single .npy array, not an .npz archive") from e
        raise NotAnArchiveError(
            f"{label} is not an .npz archive of plain arrays (pickled content is never loaded): "
            f"{type(e).__name__}"
        ) from e


def _check_unpacked_size(zf: zipfile.ZipFile, label: str, max_bytes: int) -> None:
    """Refuse an archive whose entries declare more than ``max_bytes`` in all (a zip bomb).
    The declared sizes bind: ``zipfile`` reads no more than an entry declares."""
    unpacked = sum(info.file_size for info in zf.infolist())
    if unpacked > max_bytes:
        raise NotAnArchiveError(
            f"{label} unpacks to {unpacked} bytes of arrays, more than the {max_bytes} allowed"
        )


def _keys(zf: zipfile.ZipFile, label: str) -> dict[str, zipfile.ZipInfo]:
    entries = {info.filename.removesuffix(".npy"): info for info in zf.infolist() if not info.is_dir()}
    keys = list(entries)
    missing = [k for k in REQUIRED_KEYS if k not in entries]
    if missing:
        raise MissingArrayError(
            f"{label} lacks array(s) {', '.join(missing)}; it holds: {', '.join(keys) or 'nothing'}. "
            f"A dataset archive needs {', '.join(REQUIRED_KEYS)} (optionally {', '.join(VAL_KEYS)}).",
            missing[0],
        )
    if (VAL_KEYS[0] in entries) != (VAL_KEYS[1] in entries):
        absent = VAL_KEYS[1] if VAL_KEYS[0] in entries else VAL_KEYS[0]
        raise MissingArrayError(f"{label}: give both {' and '.join(VAL_KEYS)}, or neither", absent)
    wanted = [*REQUIRED_KEYS, *(k for k in VAL_KEYS if k in entries)]
    return {key: entries[key] for key in wanted}


def _read_header(f: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype[Any], int]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    return tuple(int(n) for n in shape), bool(fortran), dtype, f.tell()


def _header(zf: zipfile.ZipFile, key: str, info: zipfile.ZipInfo, label: str) -> Header:
    try:
        with zf.open(info) as f:
            shape, fortran, dtype, offset = _read_header(f)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise BadArrayError(f"{key} in {label} cannot be read: {e}", key) from e
    if dtype.hasobject:
        raise BadArrayError(
            f"{key} is an object array; those need pickle, which is refused. Store a numeric array.", key
        )
    if fortran and len(shape) > 1:
        raise BadArrayError(
            f"{key} is stored in Fortran order; store it row-major (np.ascontiguousarray)", key
        )
    if any(n < 0 for n in shape):
        raise BadArrayError(f"{key}'s header says shape {shape}, with a negative length", key)
    declared = info.file_size - offset
    if math.prod(shape) * dtype.itemsize != declared:
        raise BadArrayError(
            f"{key}'s header says shape {shape} of {dtype}, but the entry holds {declared} bytes of data",
            key,
        )
    return Header(key, shape, dtype, info)


def _check_x_header(h: Header) -> tuple[int, ...]:
    """The sample shape (with a channel axis added to (N, H, W) images)."""
    key, shape = h.key, h.shape
    if h.dtype.kind not in _NUMERIC_KINDS:
        raise BadArrayError(
            f"{key} has dtype {h.dtype}; inputs must be numeric (uint8 images or floats)", key
        )
    if len(shape) == 3:  # (N, H, W): one-channel images
        shape = (shape[0], 1, *shape[1:])
    if len(shape) not in (2, 4):
        raise BadArrayError(
            f"{key} has shape {shape}; expected (N, L) signals, (N, H, W) or (N, C, H, W) images", key
        )
    if shape[0] == 0:
        raise BadArrayError(f"{key} is empty", key)
    if len(shape) == 4 and shape[1] > 16 and shape[3] in (1, 3, 4):
        raise BadArrayError(
            f"{key} has shape {shape}, which looks channels-last (N, H, W, C); "
            "store images channels-first (N, C, H, W)",
            key,
        )
    return shape[1:]


def _check_y_header(h: Header, rows: int, x_key: str) -> None:
    key = h.key
    if len(h.shape) != 1 or h.dtype.kind not in "iu":
        raise BadArrayError(
            f"{key} has shape {h.shape} and dtype {h.dtype}; labels must be a 1-D integer array "
            "of class indices",
            key,
        )
    if h.shape[0] != rows:
        raise BadArrayError(f"{x_key} has {rows} rows but {key} has {h.shape[0]}; they must match", key)


# ---------------------------------------------------------------- pass 2: values


def _check_x_values(key: str, dtype: np.dtype[Any], chunks: Iterator[np.ndarray]) -> None:
    if dtype == np.uint8:
        return
    # The finiteness check runs on the float32 values the engine trains on: a float64 of
    # 1e39 is finite, but not once converted.
    bad = 0
    for chunk in chunks:
        bad += int(np.count_nonzero(~np.isfinite(chunk.astype(np.float32))))
    if bad:
        raise BadArrayError(f"{key} contains {bad} NaN or infinite value(s) (as float32)", key)


def _label_counts(key: str, chunks: Iterator[np.ndarray]) -> np.ndarray:
    """How many times each class index occurs (so also the labels' range)."""
    counts = np.zeros(0, dtype=np.int64)
    for chunk in chunks:
        if not len(chunk):
            continue
        low, high = int(chunk.min()), int(chunk.max())
        if low < 0:
            raise BadArrayError(f"{key} has negative labels (min {low}); labels must be 0, 1, 2, ...", key)
        if high >= MAX_CLASSES:
            raise BadArrayError(f"{key} has label {high}; labels are class indices below {MAX_CLASSES}", key)
        found = np.bincount(chunk.astype(np.int64))
        if len(found) > len(counts):
            counts = np.pad(counts, (0, len(found) - len(counts)))
        counts[: len(found)] += found
    return counts


@dataclass
class _Checked:
    sizes: dict[str, int]
    sample_shape: tuple[int, ...]
    dtype: np.dtype[Any]
    counts: dict[str, np.ndarray]

    @property
    def num_classes(self) -> int:
        return max(len(c) for c in self.counts.values())


def _check(headers: dict[str, Header], chunks: Chunks) -> _Checked:
    """Every rule, split by split, in the order whose first failure is reported."""
    shapes: dict[str, tuple[tuple[int, ...], np.dtype[Any]]] = {}
    counts: dict[str, np.ndarray] = {}
    for split in SPLITS:
        x_key, y_key = f"x_{split}", f"y_{split}"
        if x_key not in headers:
            continue
        sample = _check_x_header(headers[x_key])
        _check_x_values(x_key, headers[x_key].dtype, chunks(x_key))
        _check_y_header(headers[y_key], headers[x_key].shape[0], x_key)
        counts[split] = _label_counts(y_key, chunks(y_key))
        shapes[split] = (sample, np.dtype(np.uint8 if headers[x_key].dtype == np.uint8 else np.float32))
    shape, dtype = shapes["train"]
    for split, (sample, kind) in shapes.items():
        if sample != shape or kind != dtype:
            raise BadArrayError(
                f"x_{split} samples are {sample} {kind} but x_train samples are "
                f"{shape} {dtype}; every split must share one sample shape and dtype",
                f"x_{split}",
            )
    checked = _Checked({s: headers[f"x_{s}"].shape[0] for s in shapes}, shape, dtype, counts)
    if checked.num_classes < 2:
        raise BadArrayError("every label is 0: a classifier needs at least two classes", "y_train")
    return checked


def _headers(zf: zipfile.ZipFile, label: str, max_bytes: int | None) -> dict[str, Header]:
    if max_bytes is not None:
        _check_unpacked_size(zf, label, max_bytes)
    return {key: _header(zf, key, info, label) for key, info in _keys(zf, label).items()}


def _streamed(zf: zipfile.ZipFile, headers: dict[str, Header], label: str) -> Chunks:
    def chunks(key: str) -> Iterator[np.ndarray]:
        h = headers[key]
        rows = max(1, CHUNK_BYTES // max(1, h.row_bytes))
        try:
            with zf.open(h.info) as f:
                _read_header(f)
                for start in range(0, h.shape[0], rows):
                    n = min(rows, h.shape[0] - start)
                    data = f.read(n * h.row_bytes)
                    if len(data) != n * h.row_bytes:
                        raise EOFError(f"{key} ends after {start} rows")
                    yield np.frombuffer(data, dtype=h.dtype).reshape(n, *h.shape[1:])
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise BadArrayError(f"{key} in {label} cannot be read: {e}", key) from e

    return chunks


# ---------------------------------------------------------------- public


def check_npz(path: str | Path, *, label: str | None = None, max_bytes: int | None = None) -> dict[str, Any]:
    """Check an archive without loading it (memory bounded by ``CHUNK_BYTES``); its summary, or
    an ``NpzFormatError``. ``max_bytes`` caps what the entries declare they unpack to."""
    path = Path(path)
    label = label or path.name
    with _open_zip(path, label) as zf:
        headers = _headers(zf, label, max_bytes)
        checked = _check(headers, _streamed(zf, headers, label))
    return _summary(checked)


def read_npz(
    path: str | Path, *, label: str | None = None, max_bytes: int | None = None
) -> tuple[Splits, int]:
    """The checked splits (``train``, ``test``, maybe ``val``) and the class count.

    Inputs come back as uint8 (kept as stored) or float32, with a channel axis added to
    (N, H, W) images; labels as int64. ``label`` names the archive in messages (default: its
    file name); ``max_bytes`` caps the arrays' unpacked size. Raises ``NpzFormatError`` for a bad
    archive, ``FileNotFoundError`` for none.
    """
    path = Path(path)
    label = label or path.name
    with _open_zip(path, label) as zf:
        headers = _headers(zf, label, max_bytes)
        arrays = {key: _load(zf, h, label) for key, h in headers.items()}
    checked = _check(headers, lambda key: iter([arrays[key]]))
    splits: Splits = {}
    for split in checked.sizes:
        x = arrays[f"x_{split}"].reshape(checked.sizes[split], *checked.sample_shape)
        splits[split] = (x.astype(checked.dtype, copy=False), arrays[f"y_{split}"].astype(np.int64))
    return splits, checked.num_classes


def map_npz(path: str | Path, *, label: str | None = None) -> tuple[Splits, int, list[str]]:
    """The checked splits of an archive with each array memory-mapped from the file where it is
    stored uncompressed (``np.savez``), else read whole; the class count; and the keys that had
    to be read whole (compressed members, ``np.savez_compressed``). The checks stream the values
    (memory bounded by ``CHUNK_BYTES``), as ``check_npz`` does."""
    path = Path(path)
    label = label or path.name
    read_whole: list[str] = []
    arrays: dict[str, np.ndarray] = {}
    with _open_zip(path, label) as zf:
        headers = _headers(zf, label, None)
        checked = _check(headers, _streamed(zf, headers, label))
        for key, h in headers.items():
            if h.info.compress_type == zipfile.ZIP_STORED:
                arrays[key] = _mapped(path, zf, h, label)
            else:
                read_whole.append(key)
                arrays[key] = _load(zf, h, label)
    splits: Splits = {}
    for split in checked.sizes:
        x = arrays[f"x_{split}"].reshape(checked.sizes[split], *checked.sample_shape)
        splits[split] = (x, arrays[f"y_{split}"].astype(np.int64))
    return splits, checked.num_classes, read_whole


def _mapped(path: Path, zf: zipfile.ZipFile, h: Header, label: str) -> np.ndarray:
    """A stored (uncompressed) member's array, mapped read-only from the archive's file."""
    with zf.open(h.info) as f:
        *_, header_len = _read_header(f)
    with path.open("rb") as raw:
        raw.seek(h.info.header_offset)
        local = raw.read(30)  # the local file header: its name and extra field lengths at 26..29
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise BadArrayError(f"{h.key} in {label}: the zip entry's local header is damaged", h.key)
    start = (
        h.info.header_offset
        + 30
        + int.from_bytes(local[26:28], "little")
        + int.from_bytes(local[28:30], "little")
    )
    return np.memmap(path, dtype=h.dtype, mode="r", offset=start + header_len, shape=h.shape)


def _load(zf: zipfile.ZipFile, h: Header, label: str) -> np.ndarray:
    """The whole array, read straight into its own buffer a chunk at a time."""
    array = np.empty(h.shape, dtype=h.dtype)
    buffer = array.reshape(-1).view(np.uint8).data
    try:
        with zf.open(h.info) as f:
            _read_header(f)
            done = 0
            while done < len(buffer):
                data = f.read(min(CHUNK_BYTES, len(buffer) - done))
                if not data:
                    raise EOFError(f"{h.key} ends after {done} of {len(buffer)} bytes")
                buffer[done : done + len(data)] = data
                done += len(data)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise BadArrayError(f"{h.key} in {label} cannot be read: {e}", h.key) from e
    return array


def _summary(checked: _Checked) -> dict[str, Any]:
    return {
        "train_size": checked.sizes["train"],
        "val_size": checked.sizes.get("val"),
        "test_size": checked.sizes["test"],
        "input_shape": list(checked.sample_shape),
        "dtype": str(checked.dtype),
        "num_classes": checked.num_classes,
        "train_class_counts": np.pad(
            checked.counts["train"], (0, checked.num_classes - len(checked.counts["train"]))
        ).tolist(),
    }


def summarize(splits: Splits, num_classes: int) -> dict[str, Any]:
    """A JSON-ready description of checked splits."""
    x_train, y_train = splits["train"]
    return {
        "train_size": len(x_train),
        "val_size": len(splits["val"][0]) if "val" in splits else None,
        "test_size": len(splits["test"][0]),
        "input_shape": list(x_train.shape[1:]),
        "dtype": str(x_train.dtype),
        "num_classes": num_classes,
        "train_class_counts": np.bincount(y_train, minlength=num_classes).tolist(),
    }

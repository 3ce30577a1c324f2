"""Uploaded files, teachers and datasets, checked without torch and without unpickling anything.

- TorchScript: a zip archive with ``<name>/code/`` (the compiled program) and ``<name>/data.pkl``.
  A plain ``torch.save`` file is also a zip with ``data.pkl`` but no ``code/``: it is a pickle
  and is refused, as is any non-zip file. The engine later loads the archive with
  ``torch.jit.load``, which never runs pickled Python.
  Its ``code/`` text is parsed (never run) and every operator it calls must pass the allowlist
  (core.opcheck), since the loader compiles that code and may run part of it while loading.
- safetensors: 8 bytes little-endian header length, a JSON header mapping tensor names to
  ``{dtype, shape, data_offsets}``, then the tensors' bytes, exactly filling the file.
- ONNX: parsed with ``onnx`` (never following external data): default-domain operators only, in
  every subgraph and local function, and no tensor stored outside the file.
- ``torch.export`` (``.pt2``): a zip of a JSON graph and raw tensors, checked by core.pt2check.
- datasets: ``.npz`` archives, checked by core.npz_format.

Every refusal is a 422 naming the offending field (``file``, or a dataset's array), raised here so
that the upload routes translate nothing.
"""

from __future__ import annotations

import json
import math
import struct
import zipfile
from pathlib import Path
from typing import Any

from core.errors import DistilleryError, FieldIssue, InvalidRequestError
from core.modelcheck import check_torchscript_code, read_onnx
from core.npz_format import NpzFormatError, check_npz
from core.pt2check import check_pt2

MAX_HEADER = 100 * 1024 * 1024  # the safetensors format's own limit
DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "U16": 2,
    "I16": 2,
    "F16": 2,
    "BF16": 2,
    "U32": 4,
    "I32": 4,
    "F32": 4,
    "U64": 8,
    "I64": 8,
    "F64": 8,
    "C64": 8,
}


class ModelFormatError(InvalidRequestError):
    """The file is not what its format says: a 422 naming the ``file`` field."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"file: {reason}", errors=[FieldIssue("file", reason)])
        self.reason = reason


def check_dataset(path: Path, label: str, max_bytes: int) -> dict[str, Any]:
    """The summary of an ``.npz`` dataset (``core.npz_format.check_npz``), or a 422 naming the
    offending array (``file`` when the archive as a whole is at fault)."""
    try:
        return check_npz(path, label=label, max_bytes=max_bytes)
    except NpzFormatError as e:
        raise InvalidRequestError.field(e.array or "file", str(e)) from None


def looks_like_zip(path: Path) -> bool:
    return zipfile.is_zipfile(path)


def check_torchscript(path: Path) -> dict[str, Any]:
    """A summary of a TorchScript archive, or ``ModelFormatError``."""
    refusal = "not a TorchScript archive; pickled models are never loaded"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            roots = {n.split("/", 1)[0] for n in names if "/" in n}
            root = next((r for r in sorted(roots) if f"{r}/data.pkl" in names), None)
            if root is None:
                raise ModelFormatError(f"{refusal} (no data.pkl)")
            code = [n for n in names if n.startswith(f"{root}/code/") and not n.endswith("/")]
            if not code:
                raise ModelFormatError(f"{refusal} (a zip with data.pkl but no code/: a torch.save pickle)")
            version = _small_text(archive, f"{root}/version") or _small_text(archive, f"{root}/.data/version")
            check_torchscript_code(archive, root)
    except zipfile.BadZipFile as e:
        raise ModelFormatError(f"{refusal} (not a zip archive: {e})") from None
    except ModelFormatError:
        raise
    except DistilleryError as e:  # an operator outside the allowlist, an entry too large
        raise ModelFormatError(str(e)) from None
    return {"archive": root, "entries": len(names), "code_files": len(code), "format_version": version}


def is_pt2(path: Path) -> bool:
    """A zip with an ``archive_format`` mark: what ``torch.export.save`` writes."""
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/archive_format") for name in archive.namelist())


def check_export_program(path: Path) -> dict[str, Any]:
    """A summary of a ``torch.export`` archive (operators, torch version), or ``ModelFormatError``."""
    try:
        with zipfile.ZipFile(path) as archive:
            return check_pt2(archive)
    except zipfile.BadZipFile as e:
        raise ModelFormatError(f"not a torch.export archive (not a zip archive: {e})") from None
    except DistilleryError as e:
        raise ModelFormatError(str(e)) from None


def check_onnx(path: Path) -> dict[str, Any]:
    """A summary of an ONNX model (operators, opset domains), or ``ModelFormatError``."""
    try:
        return read_onnx(path)[1]
    except DistilleryError as e:
        raise ModelFormatError(str(e)) from None


def _small_text(archive: zipfile.ZipFile, name: str) -> str | None:
    try:
        with archive.open(name) as f:
            return f.read(32).decode("ascii", "replace").strip() or None
    except KeyError:
        return None


def check_safetensors(path: Path) -> dict[str, Any]:
    """A summary of a safetensors file (tensor count, parameters, dtypes), or ``ModelFormatError``."""
    size = path.stat().st_size
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ModelFormatError("not a safetensors file: shorter than its 8-byte header length")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(MAX_HEADER, size - 8):
            raise ModelFormatError(
                f"not a safetensors file: header length {header_len} does not fit a {size}-byte file"
            )
        raw = f.read(header_len)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFormatError(f"not a safetensors file: the header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise ModelFormatError("not a safetensors file: the header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise ModelFormatError("safetensors __metadata__ must map strings to strings")
    spans, dtypes, parameters = [], set(), 0
    for name, info in header.items():
        begin, end, count = _tensor_span(name, info)
        spans.append((begin, end, name))
        dtypes.add(info["dtype"])
        parameters += count
    if not spans:
        raise ModelFormatError("the safetensors file holds no tensors")
    _check_spans(spans, size - 8 - header_len)
    return {
        "tensors": len(spans),
        "parameters": parameters,
        "dtypes": sorted(dtypes),
        "metadata": metadata,
    }


def _tensor_span(name: str, info: Any) -> tuple[int, int, int]:
    """(begin, end, elements) of one tensor's entry, checked against its dtype and shape."""
    if not isinstance(info, dict):
        raise ModelFormatError(f"tensor {name!r}: its entry is not an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in DTYPE_BYTES:
        raise ModelFormatError(f"tensor {name!r}: unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ModelFormatError(f"tensor {name!r}: shape must be a list of non-negative integers")
    if not (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(isinstance(o, int) and o >= 0 for o in offsets)
    ):
        raise ModelFormatError(f"tensor {name!r}: data_offsets must be [begin, end]")
    begin, end = offsets
    count = math.prod(shape)
    if end - begin != count * DTYPE_BYTES[dtype]:
        raise ModelFormatError(
            f"tensor {name!r}: {dtype} {shape} needs {count * DTYPE_BYTES[dtype]} bytes, "
            f"its offsets span {end - begin}"
        )
    return begin, end, count


def _check_spans(spans: list[tuple[int, int, str]], data_size: int) -> None:
    """The tensors tile the data area exactly: no gap, no overlap, nothing past the end."""
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise ModelFormatError(f"tensor {name!r}: data starts at {begin}, expected {position}")
        position = end
    if position != data_size:
        raise ModelFormatError(f"the tensors cover {position} bytes but the file holds {data_size}")

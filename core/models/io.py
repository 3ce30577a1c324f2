"""Reading and writing model files: safetensors weights and TorchScript teachers (ONNX and
``torch.export`` teachers: core.models.programs).

Nothing here unpickles: weights travel as safetensors (tensors + string metadata), and a
TorchScript file is read by TorchScript's own loader, which rebuilds only TorchScript code and
tensors. Paths from a spec are resolved under the data root and may not leave it.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path, PurePosixPath

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from core.errors import DataMissingError, SpecError
from core.files import atomic_path
from core.modelcheck import check_torchscript_code
from core.models.base import Classifier
from core.models.programs import check_script_module

FORMAT = "distillery.net"
FORMAT_VERSION = "1"
_NORM_KEYS = ("mean", "inv_std")
_SHOWN = 5  # offending keys listed in an error


def resolve_data_path(data_root: Path, relative: str, what: str) -> Path:
    """``data_root / relative``, refusing absolute paths, ``..`` and symbolic links that leave the root."""
    pure = PurePosixPath(relative)
    if not relative or pure.is_absolute() or ".." in pure.parts or "\\" in relative:
        raise SpecError(f"{what} {relative!r} must be a relative path inside the data root, without '..'")
    root = data_root.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise SpecError(f"{what} {relative!r} leads outside the data root")
    if not path.is_file():
        raise DataMissingError(f"{what} {relative!r} not found under the data root {data_root}")
    return path


def _net(model: nn.Module) -> nn.Module:
    return model.net if isinstance(model, Classifier) else model


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write the net's state dict (bare-net keys) as safetensors, atomically.

    A ``Classifier``'s normalization goes into the metadata (``mean``, ``inv_std`` as JSON lists:
    exact for float32), so the weights keep the input scaling they were trained with.
    """
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in _net(model).state_dict().items()}
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **(metadata or {})}
    if isinstance(model, Classifier):
        for key in _NORM_KEYS:
            meta[key] = json.dumps(getattr(model, key).flatten().tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=meta)


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of a safetensors file; ``SpecError`` if it is not one."""
    if not path.is_file():
        raise DataMissingError(f"weights file {path} not found")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (not a dict)
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise SpecError(f"{path.name} is not a safetensors weights file ({e})") from None
    return tensors, metadata


def _split_normalization(
    tensors: dict[str, torch.Tensor], metadata: dict[str, str]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Accept a Classifier's state dict (``net.*`` + buffers) as well as a bare net's."""
    norm: dict[str, torch.Tensor] = {}
    if tensors and all(k.startswith("net.") or k in _NORM_KEYS for k in tensors):
        norm = {k: tensors[k] for k in _NORM_KEYS if k in tensors}
        tensors = {k.removeprefix("net."): v for k, v in tensors.items() if k not in _NORM_KEYS}
    for key in _NORM_KEYS:
        if key not in norm and key in metadata:
            try:
                norm[key] = torch.tensor(json.loads(metadata[key]), dtype=torch.float32)
            except (ValueError, TypeError):
                raise SpecError(f"weights metadata {key!r} is not a list of numbers") from None
    return tensors, norm


def _mismatches(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> list[str]:
    def few(keys: list[str]) -> str:
        more = f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
        return ", ".join(keys[:_SHOWN]) + more

    problems = []
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [
        f"{k} {tuple(found[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in found and found[k].shape != v.shape
    ]
    if missing:
        problems.append(f"missing keys: {few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {few(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches: {few(shapes)}")
    return problems


def load_state(
    model: nn.Module, tensors: dict[str, torch.Tensor], metadata: dict[str, str], source: str
) -> None:
    """Load weights strictly into ``model``'s net (and its normalization, when the file carries one)."""
    net = _net(model)
    tensors, norm = _split_normalization(tensors, metadata)
    problems = _mismatches(net.state_dict(), tensors)
    if problems:
        raise SpecError(f"{source} does not fit the model: " + "; ".join(problems))
    net.load_state_dict(tensors, strict=True)
    if isinstance(model, Classifier):
        for key, value in norm.items():
            buffer = getattr(model, key)
            if value.numel() != buffer.numel():
                raise SpecError(
                    f"{source}: its normalization has {value.numel()} channel(s), the data {buffer.numel()}"
                )
            buffer.copy_(value.reshape(buffer.shape))


def load_weights(model: nn.Module, path: Path) -> dict[str, str]:
    """Load a safetensors file written by ``save_weights`` (or any state dict of the same net).

    Returns the file's metadata. Keys may be the bare net's or the ``Classifier``'s (``net.*``).
    """
    tensors, metadata = read_weights(path)
    load_state(model, tensors, metadata, path.name)
    return metadata


def _looks_like_torchscript(path: Path) -> bool:
    """TorchScript archives are zips holding a ``<name>/code/`` folder; ``torch.save`` zips do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(len(parts := name.split("/")) > 2 and parts[1] == "code" for name in archive.namelist())


def load_torchscript(path: Path) -> nn.Module:
    """A TorchScript module on the CPU; ``SpecError`` for anything else (pickles included),
    ``UnsafeModelError`` when its code calls an operator outside the allowlist.

    The code is judged as text before ``torch.jit.load``, which compiles it and may already run
    a class's ``__setstate__``; the loaded graphs are judged again before anything runs them.
    """
    if not path.is_file():
        raise DataMissingError(f"TorchScript file {path} not found")
    not_ts = f"{path.name} is not a TorchScript file (save one with torch.jit.script(model).save(path))"
    try:
        if not _looks_like_torchscript(path):
            raise SpecError(not_ts)
        with zipfile.ZipFile(path) as archive:
            # torch.jit.load reads the archive named by its first entry
            check_torchscript_code(archive, archive.namelist()[0].split("/", 1)[0])
        with warnings.catch_warnings():
            # torch 2.x deprecates TorchScript in favour of torch.export; the format is still ours to read.
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError, zipfile.BadZipFile, OSError) as e:
        detail = " ".join(str(e).split())[:300]
        raise SpecError(f"{not_ts}: {detail}") from None
    check_script_module(module)
    return module

"""Export of a trained student: safetensors (+ spec), TorchScript, ONNX and ``torch.export``
(``.pt2``), each verified.

Every exported model takes the dataset's RAW inputs as float32 (the ``Classifier`` normalizes them
inside): 1-D signals as they are, images as their 0..255 pixel values cast with ``x.float()``.
Each file is written atomically (temp file in the same folder + ``os.replace``), loaded back, and
must reproduce the model's logits on the sample and on batches of other sizes, or the export fails
with ``ExportError``.
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from torch import nn

from core.errors import DistilleryError
from core.files import atomic_path

log = logging.getLogger(__name__)

ONNX_OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
Runner = Callable[[torch.Tensor], torch.Tensor]


class ExportError(DistilleryError):
    """An exported file could not be written, or does not reproduce the model's outputs."""

    type = "export_failed"


def _check_batches(sample: torch.Tensor) -> list[torch.Tensor]:
    """The sample, one row, and one row more than the sample: proves the batch dimension is free."""
    return [sample, sample[:1], torch.cat([sample, sample[:1]])]


def _verify(fmt: str, run: Runner, model: nn.Module, sample: torch.Tensor, atol: float, rtol: float) -> None:
    for batch in _check_batches(sample):
        with torch.inference_mode():
            expected = model(batch).float()
            got = run(batch).float()
        try:
            torch.testing.assert_close(got, expected, atol=atol, rtol=rtol)
        except AssertionError as e:
            raise ExportError(
                f"{fmt} export does not reproduce the model (batch of {len(batch)}): {e}"
            ) from None


# ---------------------------------------------------------------- safetensors + spec


def _describe(model: nn.Module, sample: torch.Tensor, raw_dtype: torch.dtype) -> dict[str, Any]:
    with torch.inference_mode():
        classes = int(model(sample[:1]).shape[-1])
    mean = getattr(model, "mean", None)
    inv_std = getattr(model, "inv_std", None)
    return {
        "input_shape": list(sample.shape[1:]),
        "input_dtype": "float32",
        "raw_dtype": str(raw_dtype).removeprefix("torch."),
        "num_classes": classes,
        "mean": None if mean is None else mean.flatten().tolist(),
        "std": None if inv_std is None else (1.0 / inv_std).flatten().tolist(),
        "note": "logits = model(x.float()) on raw inputs; the model normalizes with mean/std itself",
    }


def _export_safetensors(
    model: nn.Module,
    sample: torch.Tensor,
    out_dir: Path,
    stem: str,
    spec_json: str,
    raw_dtype: torch.dtype,
    tolerance: tuple[float, float],
) -> None:
    with atomic_path(out_dir / f"{stem}.safetensors") as tmp:
        # save_model drops tied duplicates (shared tensors) that save_file would refuse.
        save_model(model, str(tmp), metadata={"format": "pt"}, force_contiguous=True)
        fresh = copy.deepcopy(model)
        with torch.no_grad():
            # Poison the copy's floats so that only what the file holds can make it match.
            for tensor in fresh.state_dict().values():
                if tensor.is_floating_point():
                    tensor.fill_(float("nan"))
        try:
            load_model(fresh, str(tmp), strict=True)
        except RuntimeError as e:
            raise ExportError(f"the safetensors file does not load back into the model: {e}") from None
        _verify("safetensors", fresh.eval(), model, sample, *tolerance)
    description = {"spec": json.loads(spec_json), "model": _describe(model, sample, raw_dtype)}
    with atomic_path(out_dir / f"{stem}.spec.json") as tmp:
        tmp.write_text(json.dumps(description, indent=2) + "\n")


# ---------------------------------------------------------------- TorchScript


@contextmanager
def _quiet_jit() -> Iterator[None]:
    # torch 2.14 marks torch.jit as deprecated; TorchScript is still a format users ask for.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        yield


def _trace(model: nn.Module, sample: torch.Tensor) -> tuple[torch.jit.ScriptModule | None, list[str]]:
    """The trace checked on other batch sizes, or None, and the tracer's complaints."""
    checks = [(batch,) for batch in _check_batches(sample)[1:]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", torch.jit.TracerWarning)
        try:
            traced = torch.jit.trace(model, (sample,), check_inputs=checks)
        except (RuntimeError, torch.jit.TracingCheckError) as e:
            return None, [str(e)]
    # Output mismatches on the check inputs, and Python control flow on tensors, are only warnings.
    return traced, [str(w.message) for w in caught if issubclass(w.category, torch.jit.TracerWarning)]


def _script(model: nn.Module, sample: torch.Tensor) -> torch.jit.ScriptModule:
    """Trace when the trace is clean; otherwise script, keeping a doubtful trace as the last resort."""
    with _quiet_jit():
        traced, problems = _trace(model, sample)
        if traced is not None and not problems:
            return traced
        log.info("torch.jit.trace is unreliable for this model (%s); scripting instead", problems[0][:500])
        try:
            return torch.jit.script(model)
        except Exception as e:  # scripting raises many types; all mean "not scriptable"
            if traced is not None:
                return traced  # the verification on several batch sizes will judge it
            raise ExportError(f"the model can be neither traced nor scripted: {e}") from e


def load_exported_torchscript(path: str | Path) -> torch.jit.ScriptModule:
    """Load an exported TorchScript student on the CPU, in eval mode."""
    with _quiet_jit():
        module = torch.jit.load(str(path), map_location="cpu")
    return module.eval()


def verify_torchscript_accuracy(path: str | Path, x: Any, y: torch.Tensor) -> float:
    """Top-1 accuracy of an exported TorchScript file on raw inputs (a tensor or streamed
    ``Samples``; uint8 images are cast to float)."""
    module = load_exported_torchscript(path)
    correct = 0
    with torch.inference_mode():
        for xb, yb in zip(x.split(1024), y.cpu().split(1024), strict=True):
            correct += int((module(xb.cpu().float()).argmax(dim=1) == yb).sum())
    return correct / max(1, len(y))


def _export_torchscript(
    model: nn.Module, sample: torch.Tensor, out_dir: Path, stem: str, atol: float, rtol: float
) -> None:
    scripted = _script(model, sample)
    with atomic_path(out_dir / f"{stem}.torchscript.pt") as tmp:
        with _quiet_jit():
            torch.jit.save(scripted, str(tmp))
        _verify("torchscript", load_exported_torchscript(tmp), model, sample, atol, rtol)


# ---------------------------------------------------------------- ONNX


def _onnx_dynamo(model: nn.Module, sample: torch.Tensor, path: Path) -> None:
    batch = torch.export.Dim("batch")
    torch.onnx.export(
        model,
        (sample,),
        str(path),
        dynamo=True,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: batch},),
        opset_version=ONNX_OPSET,
        external_data=False,  # one self-contained file (students are far below protobuf's 2 GB)
        verbose=False,
    )


def _onnx_legacy(model: nn.Module, sample: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        # Only reached when the dynamo exporter failed; the deprecation is known and logged above.
        warnings.filterwarnings("ignore", message=r"You are using the legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx\._internal")
        torch.onnx.export(
            model,
            (sample,),
            str(path),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=ONNX_OPSET,
        )


def _onnx_runner(path: Path) -> Runner:
    import onnxruntime as ort  # imported late: only ONNX exports need it

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> torch.Tensor:
        out = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy().astype(np.float32)})[0]
        return torch.from_numpy(np.asarray(out))

    return run


def _export_onnx(
    model: nn.Module, sample: torch.Tensor, out_dir: Path, stem: str, atol: float, rtol: float
) -> str:
    """Export with the dynamo exporter, falling back to the legacy one; return which one worked."""
    # torch.export specializes a dimension of size 1: trace with at least two rows.
    traced_on = sample if len(sample) > 1 else torch.cat([sample, sample])
    with atomic_path(out_dir / f"{stem}.onnx") as tmp:
        try:
            _onnx_dynamo(model, traced_on, tmp)
            exporter = "dynamo"
        except Exception as e:  # the dynamo exporter raises many types; the legacy one may still work
            log.warning("dynamo ONNX export failed (%s: %s); using the legacy exporter", type(e).__name__, e)
            try:
                _onnx_legacy(model, traced_on, tmp)
            except Exception as legacy_error:
                raise ExportError(
                    f"ONNX export failed: dynamo: {e}; legacy: {legacy_error}"
                ) from legacy_error
            exporter = "legacy"
        _verify("onnx", _onnx_runner(tmp), model, sample, atol, rtol)
    return exporter


# ---------------------------------------------------------------- torch.export


def load_exported_pt2(path: str | Path) -> nn.Module:
    """Load an exported ``.pt2`` student (our own file: no allowlist check) as a callable module."""
    with warnings.catch_warnings(), open(path, "rb") as f:
        warnings.simplefilter("ignore")  # the loader warns that its format may still change
        return torch.export.load(f).module()


def _export_pt2(
    model: nn.Module, sample: torch.Tensor, out_dir: Path, stem: str, atol: float, rtol: float
) -> None:
    # torch.export specializes a dimension of size 1: trace with at least two rows.
    traced_on = sample if len(sample) > 1 else torch.cat([sample, sample])
    try:
        program = torch.export.export(model, (traced_on,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    except Exception as e:  # torch.export raises many types; all mean "not exportable"
        raise ExportError(f"torch.export cannot capture the model: {str(e)[:500]}") from e
    with atomic_path(out_dir / f"{stem}.pt2") as tmp:
        with tmp.open("wb") as f:
            torch.export.save(program, f)
        _verify("pt2", load_exported_pt2(tmp), model, sample, atol, rtol)


# ---------------------------------------------------------------- entry point


def export_student(
    model: nn.Module,
    *,
    sample: torch.Tensor,
    formats: Sequence[str],
    out_dir: Path,
    spec_json: str,
    stem: str = "student",
    atol: float = 1e-4,
    rtol: float = 1e-4,
) -> dict[str, str]:
    """Write the asked formats of ``model`` under ``out_dir``; return artifact key -> file name.

    ``sample`` holds a few raw inputs (float32 or uint8); the model is exported on the CPU in eval
    mode from a copy, so the caller's model (device, mode) is untouched.
    """
    unknown = set(formats) - {"safetensors", "torchscript", "onnx", "pt2"}
    if unknown:
        raise ExportError(f"unknown export format(s): {sorted(unknown)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cpu_model = copy.deepcopy(model).cpu().eval()
    x = sample.detach().cpu().float()
    names: dict[str, str] = {}
    if "safetensors" in formats:
        _export_safetensors(cpu_model, x, out_dir, stem, spec_json, sample.dtype, (atol, rtol))
        names["student_safetensors"] = f"{stem}.safetensors"
        names["student_spec"] = f"{stem}.spec.json"
    if "torchscript" in formats:
        _export_torchscript(cpu_model, x, out_dir, stem, atol, rtol)
        names["student_torchscript"] = f"{stem}.torchscript.pt"
    if "onnx" in formats:
        exporter = _export_onnx(cpu_model, x, out_dir, stem, atol, rtol)
        log.info("ONNX export of %s used the %s exporter", stem, exporter)
        names["student_onnx"] = f"{stem}.onnx"
    if "pt2" in formats:
        _export_pt2(cpu_model, x, out_dir, stem, atol, rtol)
        names["student_pt2"] = f"{stem}.pt2"
    return names

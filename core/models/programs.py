"""Teachers given as programs: their operators judged (core.opcheck) before anything runs them.

- TorchScript (loaded in core.models.io): every method of every submodule, every node of every
  block, with called functions and methods inlined; values of C++ (torchbind) class types refused.
- ONNX: run by ONNX Runtime behind a frozen module that takes a batch and returns logits.
- ``torch.export`` (``.pt2``): the archive is judged as files first (core.pt2check: its pickles
  and Python-evaluated strings), the sample inputs are read with ``weights_only`` so the loader's
  unsafe fallback is never reached, then every graph module's call targets are judged again.
"""

from __future__ import annotations

import io
import pickle
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core.errors import DataMissingError, SpecError, UnsafeModelError
from core.modelcheck import read_onnx
from core.opcheck import check_op
from core.pt2check import check_pt2, check_pt2_target

_CUSTOM_CLASSES = "__torch__.torch.classes."


def _nodes(block: Any) -> Iterator[Any]:
    for node in block.nodes():
        yield node
        for inner in node.blocks():
            yield from _nodes(inner)


def check_script_module(module: Any) -> None:
    """``UnsafeModelError`` naming the first operator of a loaded TorchScript module that is not
    allowed, in any method of any submodule (called functions inlined)."""
    for path, sub in module.named_modules():
        for method in sub._c._method_names():
            compiled = sub._c._get_method(method)
            where = f"{path or 'the model'}.{method}"
            for graph in (compiled.graph, compiled.inlined_graph):
                for node in _nodes(graph):
                    check_op(node.kind(), where)
                    for value in [*node.inputs(), *node.outputs()]:
                        if str(value.type()).startswith(_CUSTOM_CLASSES):
                            raise UnsafeModelError(
                                f"the model uses the C++ class {value.type()} in {where}: refused"
                            )


# ---------------------------------------------------------------- ONNX


class OnnxTeacher(nn.Module):
    """A frozen ONNX teacher: raw inputs in, float32 logits out, on the input's device.

    ONNX Runtime runs it with the CUDA provider when the input is on a CUDA device and the
    installed runtime has that provider, with the CPU provider otherwise. It has no parameters
    and no modules: feature losses cannot use it (the spec refuses them).
    """

    def __init__(self, model_bytes: bytes, name: str) -> None:
        super().__init__()
        self.model_bytes = model_bytes
        self.name = name
        self._sessions: dict[str, Any] = {}

    def _session(self, device: torch.device) -> Any:
        import onnxruntime as ort  # late: only ONNX teachers need it

        cuda = device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers()
        key = "cuda" if cuda else "cpu"
        if key not in self._sessions:
            options = ort.SessionOptions()
            options.log_severity_level = 3  # errors only: the runtime's warnings are not the job's
            providers = (
                ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
            )
            try:
                self._sessions[key] = ort.InferenceSession(self.model_bytes, options, providers=providers)
            except Exception as e:  # the runtime raises its own exception types
                raise SpecError(f"ONNX Runtime cannot run {self.name}: {str(e)[:300]}") from None
        return self._sessions[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        session = self._session(x.device)
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise SpecError(
                f"the ONNX teacher {self.name} takes {len(inputs)} inputs; a teacher takes one batch"
            )
        batch = x.detach().float().cpu().numpy()
        try:
            out = session.run(None, {inputs[0].name: batch})[0]
        except Exception as e:  # the runtime raises its own exception types
            raise SpecError(
                f"the ONNX teacher {self.name} failed on a batch {tuple(x.shape)}: {str(e)[:300]}"
            ) from None
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).to(x.device)

    def __deepcopy__(self, memo: dict[int, Any]) -> OnnxTeacher:
        return OnnxTeacher(self.model_bytes, self.name)  # sessions are not copyable; they are rebuilt


def load_onnx(path: Path) -> nn.Module:
    """An ONNX teacher; ``SpecError`` if the file is not ONNX, ``UnsafeModelError`` if refused."""
    if not path.is_file():
        raise DataMissingError(f"ONNX file {path} not found")
    model, _ = read_onnx(path)
    # From bytes, not the path: the runtime then has no folder to resolve external data against.
    return OnnxTeacher(model.SerializeToString(), path.name).eval()


# ---------------------------------------------------------------- torch.export


def _target_name(target: Any) -> str:
    """A call target as core.pt2check judges it (the serialized form)."""
    if isinstance(target, torch._ops.OpOverload | torch._ops.OpOverloadPacket):
        namespace, _, name = target.name().partition("::")
        return f"torch.ops.{namespace}.{name}"
    if isinstance(target, torch._ops.HigherOrderOperator):
        return f"torch.ops.higher_order.{target.name()}.default"
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__name__', repr(target))}"


def check_exported_program(program: Any) -> None:
    """Every call of every graph module of an ``ExportedProgram`` (subgraphs included)."""
    for path, sub in program.graph_module.named_modules():
        if not isinstance(sub, torch.fx.GraphModule):
            continue
        for node in sub.graph.nodes:
            where = f"{path or 'the graph'}, node {node.name}"
            if node.op == "call_function":
                check_pt2_target(_target_name(node.target), where)
            elif node.op in ("call_method", "call_module"):
                raise UnsafeModelError(f"the program makes a Python {node.op} in {where}: refused")


def load_pt2(path: Path) -> nn.Module:
    """A ``torch.export`` teacher (its ``.module()``); ``SpecError``/``UnsafeModelError`` as above."""
    if not path.is_file():
        raise DataMissingError(f"torch.export file {path} not found")
    try:
        with zipfile.ZipFile(path) as archive:
            check_pt2(archive)
            root = archive.namelist()[0].split("/", 1)[0]
            sample = archive.read(f"{root}/data/sample_inputs/model.pt")
        # torch.export.load retries a failed weights_only load without it: fail here instead.
        torch.load(io.BytesIO(sample), weights_only=True)
    except zipfile.BadZipFile:
        raise SpecError(
            f"{path.name} is not a torch.export archive (save one with torch.export.save)"
        ) from None
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError) as e:
        raise UnsafeModelError(
            f"{path.name}: its sample inputs are not plain tensors ({type(e).__name__})"
        ) from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the loader warns about its own format's stability
        try:
            with path.open("rb") as f:
                program = torch.export.load(f)
        except Exception as e:  # the deserializer raises many types
            raise SpecError(
                f"{path.name} cannot be loaded as a torch.export program: {str(e)[:300]}"
            ) from None
    check_exported_program(program)
    return ExportedTeacher(program.module())


class ExportedTeacher(nn.Module):
    """A ``torch.export`` program as a teacher. Its train/eval behaviour was fixed when it was
    exported (and its module refuses ``eval()``), so ``train``/``eval`` only set the flag."""

    def __init__(self, program: nn.Module) -> None:
        super().__init__()
        self.program = program

    def train(self, mode: bool = True) -> ExportedTeacher:
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.program(x)

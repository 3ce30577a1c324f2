from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_model
from torch import nn

from core import export as export_module
from core.errors import DistilleryError
from core.export import (
    ExportError,
    export_student,
    load_exported_pt2,
    load_exported_torchscript,
    verify_torchscript_accuracy,
)
from core.models.base import Classifier
from core.pt2check import check_pt2

SPEC_JSON = json.dumps({"spec_version": 1, "name": "tiny"})
ALL_FORMATS = ("safetensors", "torchscript", "onnx", "pt2")


def _mlp() -> tuple[Classifier, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(40, 16), nn.ReLU(), nn.Linear(16, 5))
    return Classifier(net, (0.5,), (2.0,), rank=2), torch.randn(8, 40) * 3 + 0.5


def _convnet() -> tuple[Classifier, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )
    model = Classifier(net, (120.0, 110.0, 100.0), (60.0, 55.0, 50.0), rank=3)
    images = torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8)
    model.train()(images)  # non-default BatchNorm statistics, and a model left in training mode
    return model, images


@pytest.fixture(params=["mlp", "convnet"])
def model_and_sample(request: pytest.FixtureRequest) -> tuple[Classifier, torch.Tensor]:
    return _mlp() if request.param == "mlp" else _convnet()


def _reference(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x.float())


def test_round_trip_of_every_format(
    model_and_sample: tuple[Classifier, torch.Tensor], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model, sample = model_and_sample
    was_training = model.training
    with caplog.at_level(logging.INFO, logger="core.export"):
        names = export_student(
            model, sample=sample, formats=ALL_FORMATS, out_dir=tmp_path, spec_json=SPEC_JSON
        )
    assert "used the dynamo exporter" in caplog.text
    assert names == {
        "student_safetensors": "student.safetensors",
        "student_spec": "student.spec.json",
        "student_torchscript": "student.torchscript.pt",
        "student_onnx": "student.onnx",
        "student_pt2": "student.pt2",
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names.values())  # no temp files left
    assert model.training == was_training

    fresh = Classifier(*_fresh_args(model))
    load_model(fresh, str(tmp_path / "student.safetensors"))
    torch.testing.assert_close(_reference(fresh, sample), _reference(model, sample))

    scripted = load_exported_torchscript(tmp_path / "student.torchscript.pt")
    torch.testing.assert_close(scripted(sample.float()), _reference(model, sample), atol=1e-5, rtol=1e-5)

    session = ort.InferenceSession(str(tmp_path / "student.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    for n in (1, 7):  # the batch dimension is dynamic
        x = sample[torch.arange(n) % len(sample)]
        (logits,) = session.run(None, {"input": x.float().numpy()})
        np.testing.assert_allclose(logits, _reference(model, x).numpy(), atol=1e-4, rtol=1e-4)

    program = load_exported_pt2(tmp_path / "student.pt2")
    for n in (1, 7):  # the batch dimension is dynamic here too
        x = sample[torch.arange(n) % len(sample)]
        torch.testing.assert_close(program(x.float()), _reference(model, x), atol=1e-5, rtol=1e-5)
    with zipfile.ZipFile(tmp_path / "student.pt2") as archive:
        check_pt2(archive)  # our own export passes the allowlist it applies to uploads


def _fresh_args(model: Classifier) -> tuple[nn.Module, tuple[float, ...], tuple[float, ...], int]:
    """Same architecture, other weights: what a registry would rebuild from the spec."""
    import copy

    net = copy.deepcopy(model.net)
    for p in net.parameters():
        nn.init.normal_(p)
    rank = 3 if model.mean.ndim == 4 else 2
    return net, (0.0,) * model.mean.numel(), (1.0,) * model.mean.numel(), rank


def test_spec_file_describes_the_inputs(tmp_path: Path) -> None:
    model, images = _convnet()
    export_student(model, sample=images, formats=["safetensors"], out_dir=tmp_path, spec_json=SPEC_JSON)
    described = json.loads((tmp_path / "student.spec.json").read_text())
    assert described["spec"] == json.loads(SPEC_JSON)
    info = described["model"]
    assert info["input_shape"] == [3, 8, 8]
    assert info["raw_dtype"] == "uint8" and info["input_dtype"] == "float32"
    assert info["num_classes"] == 3
    assert info["mean"] == pytest.approx([120.0, 110.0, 100.0])
    assert info["std"] == pytest.approx([60.0, 55.0, 50.0], rel=1e-6)


def test_only_the_asked_formats_are_written(tmp_path: Path) -> None:
    model, sample = _mlp()
    names = export_student(model, sample=sample, formats=["torchscript"], out_dir=tmp_path, spec_json="{}")
    assert names == {"student_torchscript": "student.torchscript.pt"}
    assert [p.name for p in tmp_path.iterdir()] == ["student.torchscript.pt"]


def test_torchscript_accuracy_on_raw_uint8_images(tmp_path: Path) -> None:
    model, images = _convnet()
    export_student(model, sample=images, formats=["torchscript"], out_dir=tmp_path, spec_json="{}")
    labels = _reference(model, images).argmax(dim=1)
    labels[:2] = (labels[:2] + 1) % 3  # two wrong labels out of 8
    assert verify_torchscript_accuracy(tmp_path / "student.torchscript.pt", images, labels) == 0.75


class _DataDependent(nn.Module):
    """Python control flow on tensor values: a trace would freeze one branch, scripting keeps both."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.sum() > 0):
            return self.linear(x)
        return -self.linear(x)


def test_torchscript_scripts_what_tracing_gets_wrong(tmp_path: Path) -> None:
    # A bare module: scripting a Classifier fails today (its class-level buffer annotations are strings
    # under `from __future__ import annotations`, which TorchScript cannot resolve).
    model = _DataDependent()
    sample = torch.cat([torch.ones(4, 4), -torch.ones(4, 4)])  # rows of both signs, sums of both signs
    export_student(model, sample=sample, formats=["torchscript"], out_dir=tmp_path, spec_json="{}")
    scripted = load_exported_torchscript(tmp_path / "student.torchscript.pt")
    for x in (sample[:1], sample[4:5]):  # one positive, one negative row
        torch.testing.assert_close(scripted(x), _reference(model, x))


def test_tied_weights_export(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Linear(6, 6), nn.Linear(6, 6))
    net[1].weight = net[0].weight
    model = Classifier(net, (0.0,), (1.0,), rank=2)
    names = export_student(
        model, sample=torch.randn(4, 6), formats=["safetensors"], out_dir=tmp_path, spec_json="{}"
    )
    assert "student_safetensors" in names


def test_legacy_onnx_exporter_is_the_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object) -> None:
        raise RuntimeError("dynamo exporter unavailable")

    monkeypatch.setattr(export_module, "_onnx_dynamo", broken)
    model, sample = _mlp()
    names = export_student(model, sample=sample, formats=["onnx"], out_dir=tmp_path, spec_json="{}")
    assert names == {"student_onnx": "student.onnx"}  # written by the legacy exporter, and verified


class _AlwaysDropout(nn.Module):
    """A real bug: functional dropout that ignores eval mode, so outputs are not a function of x."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(F.dropout(x, p=0.5, training=True))


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_a_model_that_does_not_reproduce_fails_the_export(fmt: str, tmp_path: Path) -> None:
    model = Classifier(_AlwaysDropout(), (0.0,), (1.0,), rank=2)
    with pytest.raises(ExportError, match="does not reproduce") as info:
        export_student(model, sample=torch.randn(8, 4), formats=[fmt], out_dir=tmp_path, spec_json="{}")
    assert isinstance(info.value, DistilleryError) and info.value.type == "export_failed"
    assert list(tmp_path.iterdir()) == []  # atomic: nothing half-written is left


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    model, sample = _mlp()
    with pytest.raises(ExportError, match="unknown export format"):
        export_student(model, sample=sample, formats=["pickle"], out_dir=tmp_path, spec_json="{}")

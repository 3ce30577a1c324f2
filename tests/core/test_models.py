"""The model zoo: shapes, parameter counts, weight files and TorchScript teachers (CPU, tiny inputs)."""

from __future__ import annotations

import pickle
import typing
import warnings
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from core.data import load_dataset
from core.data.base import DataSplits, Split
from core.errors import DataMissingError, SpecError
from core.export import export_student
from core.models import (
    MODELS,
    Classifier,
    build_classifier,
    build_net,
    count_params,
    load_weights,
    save_weights,
)
from core.runner import run_job
from core.spec import (
    ArchitectureSpec,
    CifarResNetModel,
    CNN1DModel,
    CNNModel,
    MLPModel,
    ModelSpec,
    OnnxModel,
    Pt2Model,
    TorchScriptModel,
    TorchvisionArch,
    TorchvisionModel,
    WideResNetModel,
    parse_spec,
)

SIGNAL = (40,)
IMAGE = (3, 16, 16)


def _kinds(union: Any) -> set[str]:
    """The ``kind`` literals of an ``Annotated[Union[...], Field(...)]`` spec union."""
    members = typing.get_args(typing.get_args(union)[0])
    return {cls.model_fields["kind"].default for cls in members}


def _data(input_shape: tuple[int, ...], num_classes: int = 5, n: int = 8, seed: int = 0) -> DataSplits:
    g = torch.Generator().manual_seed(seed)
    channels = 1 if len(input_shape) == 1 else input_shape[0]
    split = Split(torch.randn(n, *input_shape, generator=g) * 3 + 1, torch.arange(n) % num_classes)
    return DataSplits(
        name="tiny",
        train=split,
        val=split,
        test=split,
        num_classes=num_classes,
        input_shape=input_shape,
        mean=(1.0,) * channels,
        std=(3.0,) * channels,
    )


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


# ------------------------------------------------------------------ registry and shapes

# Which data ranks each architecture reads; a new kind must be added here (and to the spec).
RANKS: dict[str, tuple[int, ...]] = {
    "mlp": (1, 3),
    "cnn1d": (1,),
    "cnn": (3,),
    "cifar_resnet": (3,),
    "wide_resnet": (3,),
    "torchvision": (3,),
}


def test_registry_covers_exactly_the_architecture_kinds() -> None:
    assert set(MODELS.names()) == _kinds(ArchitectureSpec)
    assert _kinds(ModelSpec) - _kinds(ArchitectureSpec) == {"torchscript", "onnx", "pt2"}
    assert set(RANKS) == _kinds(ArchitectureSpec)


def _default_spec(kind: str) -> Any:
    members = typing.get_args(typing.get_args(ArchitectureSpec)[0])
    return next(cls() for cls in members if cls.model_fields["kind"].default == kind)


@pytest.mark.parametrize("kind", sorted(RANKS))
def test_every_architecture_runs_on_its_data(kind: str) -> None:
    for rank in RANKS[kind]:
        shape = SIGNAL if rank == 1 else IMAGE
        net = build_net(_default_spec(kind), shape, 7)
        assert _logits(net, torch.randn(2, *shape)).shape == (2, 7)


@pytest.mark.parametrize("kind", sorted(RANKS))
def test_architecture_refuses_data_of_the_wrong_rank(kind: str) -> None:
    for rank in {1, 3} - set(RANKS[kind]):
        shape = SIGNAL if rank == 1 else IMAGE
        with pytest.raises(SpecError, match=kind) as info:
            build_net(_default_spec(kind), shape, 7)
        needed = "1-D signals" if RANKS[kind] == (1,) else "images"
        assert needed in str(info.value)


@pytest.mark.parametrize("arch", typing.get_args(TorchvisionArch))
def test_every_torchvision_arch_runs_on_cifar_and_mnist_shapes(arch: str) -> None:
    for shape in ((3, 32, 32), (1, 28, 28)):
        net = build_net(TorchvisionModel(arch=arch), shape, 3)
        assert _logits(net, torch.randn(2, *shape)).shape == (2, 3)


def test_torchvision_small_images_get_a_stride_one_stem() -> None:
    net: Any = build_net(TorchvisionModel(arch="resnet18"), (1, 28, 28), 10)
    assert net.conv1.in_channels == 1 and net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, nn.Identity)
    large: Any = build_net(TorchvisionModel(arch="resnet18"), (3, 96, 96), 10)
    assert large.conv1.kernel_size == (7, 7) and large.conv1.stride == (2, 2)


def test_cnn_runs_on_digits_mnist_and_cifar_sizes() -> None:
    spec = CNNModel(channels=(8, 8, 8, 8), hidden=16)  # 4 poolings: 8x8 digits reach 1x1 and stop
    for shape in ((1, 8, 8), (1, 28, 28), (3, 32, 32)):
        assert _logits(build_net(spec, shape, 10), torch.randn(2, *shape)).shape == (2, 10)


def test_feature_paths_are_readable() -> None:
    def names(spec: Any, shape: tuple[int, ...]) -> set[str]:
        return {name for name, _ in build_net(spec, shape, 10).named_modules()}

    assert {"conv1", "bn1", "layer1", "layer2", "layer3", "fc"} <= names(CifarResNetModel(depth=8), IMAGE)
    assert {"conv1", "block1", "block2", "block3", "bn1", "fc"} <= names(WideResNetModel(depth=10), IMAGE)
    assert {"features.0", "features.2", "classifier"} <= names(CNN1DModel(), SIGNAL)
    assert {"hidden.0", "hidden.1", "classifier"} <= names(MLPModel(), SIGNAL)


# ------------------------------------------------------------------ MNIST-1D's ConvBase


class ConvBase(nn.Module):
    """MNIST-1D's reference 1-D CNN, written out as in the paper's code."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, 25, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(25, 25, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(25, 25, 3, stride=2, padding=1)
        self.linear = nn.Linear(125, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1, 1, x.shape[-1])
        h = self.conv3(self.conv2(self.conv1(x).relu()).relu()).relu()
        return self.linear(h.view(h.shape[0], -1))


def test_cnn1d_default_is_mnist1d_convbase() -> None:
    net: Any = build_net(CNN1DModel(), (40,), 10)
    convs = [block.conv for block in net.features]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (1, 25, (5,), (2,), (1,)),
        (25, 25, (3,), (2,), (1,)),
        (25, 25, (3,), (2,), (1,)),
    ]
    assert (net.classifier.in_features, net.classifier.out_features) == (125, 10)
    # 25*1*5+25 + 2*(25*25*3+25) + 125*10+10
    assert count_params(net) == 150 + 2 * 1900 + 1260 == 5210

    reference = ConvBase()
    for i, conv in enumerate(convs, start=1):
        getattr(reference, f"conv{i}").load_state_dict(conv.state_dict())
    reference.linear.load_state_dict(net.classifier.state_dict())
    x = torch.randn(4, 40)
    assert torch.allclose(_logits(net, x), _logits(reference, x), atol=1e-6)
    assert torch.equal(_logits(net, x), _logits(net, x.unsqueeze(1)))


def test_cnn1d_refuses_a_signal_too_short_for_its_layers() -> None:
    with pytest.raises(SpecError, match="too short"):
        build_net(CNN1DModel(), (2,), 10)


# ------------------------------------------------------------------ parameter counts


@pytest.mark.parametrize(
    ("spec", "classes", "literature"),
    [
        (CifarResNetModel(depth=20), 10, 0.27e6),
        (CifarResNetModel(depth=56), 10, 0.85e6),
        (CifarResNetModel(depth=110), 10, 1.7e6),
        (CifarResNetModel(depth=8, width=4), 100, 1.23e6),  # CRD's resnet8x4 (CIFAR-100)
        (CifarResNetModel(depth=32, width=4), 100, 7.43e6),  # CRD's resnet32x4 (CIFAR-100)
        (WideResNetModel(depth=16, widen=2), 10, 0.69e6),
        (WideResNetModel(depth=40, widen=2), 10, 2.2e6),
    ],
)
def test_param_counts_match_the_literature(spec: Any, classes: int, literature: float) -> None:
    assert count_params(build_net(spec, (3, 32, 32), classes)) == pytest.approx(literature, rel=0.03)


def test_count_params_counts_parameters_not_buffers() -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    assert count_params(model) == 3 * 2 + 2 + 2 + 2
    model[1].requires_grad_(False)
    assert count_params(model, trainable_only=True) == 8


# ------------------------------------------------------------------ weight files


def _trained_cnn(data: DataSplits, root: Path) -> nn.Module:
    model = build_classifier(CNNModel(channels=(4, 8), hidden=8), data, root)
    model.train()
    model(data.train.x)  # move the BN running statistics away from their defaults
    return model


def test_safetensors_round_trip_gives_identical_logits(tmp_path: Path) -> None:
    data = _data((3, 8, 8))
    model = _trained_cnn(data, tmp_path)
    save_weights(model, tmp_path / "ckpt" / "teacher.safetensors", metadata={"epoch": "3"})
    assert not list((tmp_path / "ckpt").glob("*.tmp"))

    spec = CNNModel(channels=(4, 8), hidden=8)
    loaded = build_classifier(spec, data, tmp_path, checkpoint="ckpt/teacher.safetensors")
    assert torch.equal(_logits(loaded, data.test.x), _logits(model, data.test.x))
    metadata = load_weights(build_classifier(spec, data, tmp_path), tmp_path / "ckpt/teacher.safetensors")
    assert metadata["epoch"] == "3" and metadata["format"] == "distillery.net"


def test_the_file_keeps_the_normalization_the_weights_were_trained_with(tmp_path: Path) -> None:
    data = _data(SIGNAL)
    model = build_classifier(MLPModel(hidden=(8,)), data, tmp_path)
    save_weights(model, tmp_path / "w.safetensors")
    other = _data(SIGNAL)
    other.mean, other.std = (5.0,), (0.5,)
    loaded = build_classifier(MLPModel(hidden=(8,)), other, tmp_path, checkpoint="w.safetensors")
    assert torch.equal(_logits(loaded, data.test.x), _logits(model, data.test.x))


def test_classifier_state_dict_keys_are_accepted(tmp_path: Path) -> None:
    data = _data(SIGNAL)
    model = build_classifier(CNN1DModel(channels=4), data, tmp_path)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "full.safetensors"))
    loaded = build_classifier(CNN1DModel(channels=4), data, tmp_path, checkpoint="full.safetensors")
    assert torch.equal(_logits(loaded, data.test.x), _logits(model, data.test.x))


def test_a_checkpoint_of_another_shape_is_refused_naming_keys(tmp_path: Path) -> None:
    data = _data(SIGNAL)
    save_weights(build_classifier(MLPModel(hidden=(16, 16)), data, tmp_path), tmp_path / "w.safetensors")
    with pytest.raises(SpecError, match=r"shape mismatches: hidden\.0\.linear\.weight \(16, 40\) vs model"):
        build_classifier(MLPModel(hidden=(8, 16)), data, tmp_path, checkpoint="w.safetensors")
    with pytest.raises(
        SpecError, match=r"unexpected keys: hidden\.1\.linear\.bias, hidden\.1\.linear\.weight"
    ):
        build_classifier(MLPModel(hidden=(16,)), data, tmp_path, checkpoint="w.safetensors")
    with pytest.raises(SpecError, match=r"missing keys: features\.0\.conv\.weight"):
        build_classifier(CNN1DModel(), data, tmp_path, checkpoint="w.safetensors")


def test_checkpoint_paths_stay_under_the_data_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    data = _data(SIGNAL)
    save_weights(build_classifier(MLPModel(), data, root), tmp_path / "outside.safetensors")
    (root / "link.safetensors").symlink_to(tmp_path / "outside.safetensors")
    for bad in ("../outside.safetensors", str(tmp_path / "outside.safetensors"), "link.safetensors"):
        with pytest.raises(SpecError, match="data root"):
            build_classifier(MLPModel(), data, root, checkpoint=bad)
    with pytest.raises(DataMissingError, match=r"missing\.safetensors"):
        build_classifier(MLPModel(), data, root, checkpoint="missing.safetensors")
    (root / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(SpecError, match="not a safetensors"):
        build_classifier(MLPModel(), data, root, checkpoint="junk.safetensors")


# ------------------------------------------------------------------ TorchScript teachers


def _script(module: nn.Module) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated upstream
        return torch.jit.script(module)


def test_a_torchscript_teacher_gives_the_scripted_outputs(tmp_path: Path) -> None:
    data = _data((3, 8, 8))
    teacher = _trained_cnn(data, tmp_path).eval()
    scripted = _script(teacher)
    scripted.save(str(tmp_path / "teacher.pt"))
    loaded = build_classifier(TorchScriptModel(path="teacher.pt"), data, tmp_path)
    assert not isinstance(loaded, Classifier)  # it takes raw inputs itself
    assert torch.equal(_logits(loaded, data.test.x), _logits(teacher, data.test.x))
    with pytest.raises(SpecError, match="takes no checkpoint"):
        build_classifier(TorchScriptModel(path="teacher.pt"), data, tmp_path, checkpoint="teacher.pt")
    with pytest.raises(SpecError, match="loaded from its file"):
        build_net(TorchScriptModel(path="teacher.pt"), (3, 8, 8), 5)


@pytest.mark.parametrize("kind", ["onnx", "pt2"])
def test_onnx_and_pt2_teachers_give_the_exported_outputs(kind: str, tmp_path: Path) -> None:
    data = _data((3, 8, 8))
    teacher = _trained_cnn(data, tmp_path).eval()
    names = export_student(teacher, sample=data.test.x[:4], formats=[kind], out_dir=tmp_path, spec_json="{}")
    spec = (
        OnnxModel(path=names[f"student_{kind}"])
        if kind == "onnx"
        else Pt2Model(path=names[f"student_{kind}"])
    )
    loaded = build_classifier(spec, data, tmp_path)
    loaded.eval()  # the runner freezes teachers this way
    assert not list(loaded.parameters()) or all(
        p.requires_grad_(False) is not None for p in loaded.parameters()
    )
    assert torch.allclose(_logits(loaded, data.test.x), _logits(teacher, data.test.x), atol=1e-5)
    with pytest.raises(SpecError, match="takes no checkpoint"):
        build_classifier(spec, data, tmp_path, checkpoint="x.safetensors")


def test_program_teachers_refuse_feature_losses_and_checkpoints() -> None:
    losses = [
        {"kind": "hint", "student_layer": "0", "teacher_layer": "0"},
        {"kind": "attention", "student_layers": ["0"], "teacher_layers": ["0"]},
        {"kind": "weight_l2"},
    ]
    for kind, loss in (("onnx", losses[0]), ("pt2", losses[1]), ("onnx", losses[2])):
        teacher = {"model": {"kind": kind, "path": "t"}}
        with pytest.raises(SpecError, match=f"{kind} teacher does not expose"):
            parse_spec({"teacher": teacher, "distill": {"losses": [loss]}})
        with pytest.raises(SpecError, match="carries its weights"):
            parse_spec({"teacher": {**teacher, "checkpoint": "w.safetensors"}})


def _digits_teacher(data: DataSplits) -> nn.Module:
    """An MLP fitted to the digits in a few hundred full-batch steps (well above chance)."""
    torch.manual_seed(0)
    model = build_classifier(MLPModel(hidden=(64,)), data, Path())
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):
        optimizer.zero_grad()
        F.cross_entropy(model(data.train.x), data.train.y).backward()
        optimizer.step()
    return model.eval()


@pytest.mark.parametrize("kind", ["onnx", "pt2"])
def test_a_program_teacher_distils_a_student_end_to_end(kind: str, tmp_path: Path) -> None:
    spec = parse_spec(
        {
            "name": "program-teacher",
            "data": {"kind": "digits"},
            "teacher": {"model": {"kind": kind, "path": f"uploads/teacher.{kind}"}},
            "student": {"model": {"kind": "mlp", "hidden": [32]}},
            "distill": {"epochs": 3, "batch_size": 64},
            "baseline": False,
            "export": ["safetensors"],
            "runtime": {"measure_speed": False},
        }
    )
    data = load_dataset(spec.data, tmp_path, seed=spec.seed)
    teacher = _digits_teacher(data)
    names = export_student(
        teacher,
        sample=data.test.x[:4],
        formats=[kind],
        out_dir=tmp_path / "uploads",
        stem="teacher",
        spec_json="{}",
    )
    assert names == {f"student_{kind}": f"teacher.{kind}"}
    expected = float((_logits(teacher, data.test.x).argmax(1) == data.test.y).double().mean())
    assert expected > 0.8
    report = run_job(spec, tmp_path / "job", data_root=tmp_path, device="cpu")
    # the report shows the given teacher, evaluated through the program the job ran
    assert report.teacher.test_top1 == pytest.approx(expected, abs=1e-3)
    assert "teacher_safetensors" not in report.artifacts  # given, not trained
    assert report.student.test_top1 > 0.5


class _Touch:
    """Unpickling this creates a file: proof that a loader ran code it should not have."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (Path.touch, (self.marker,))


def test_files_posing_as_torchscript_are_refused_without_unpickling(tmp_path: Path) -> None:
    data = _data(SIGNAL)
    marker = tmp_path / "pwned"
    (tmp_path / "pickle.pt").write_bytes(pickle.dumps(_Touch(marker)))
    torch.save({"w": torch.zeros(2)}, tmp_path / "saved.pt")
    with zipfile.ZipFile(tmp_path / "forged.pt", "w") as archive:  # a zip laid out like TorchScript
        archive.writestr("m/code/__torch__/m.py", "")
        archive.writestr("m/data.pkl", pickle.dumps(_Touch(marker), protocol=2))
        archive.writestr("m/constants.pkl", pickle.dumps((), protocol=2))
        archive.writestr("m/version", "3\n")
    for name in ("pickle.pt", "saved.pt", "forged.pt"):
        with pytest.raises(SpecError, match="not a TorchScript file"):
            build_classifier(TorchScriptModel(path=name), data, tmp_path)
    assert not marker.exists()
    with pytest.raises(DataMissingError):
        build_classifier(TorchScriptModel(path="absent.pt"), data, tmp_path)
    with pytest.raises(SpecError, match="data root"):
        build_classifier(TorchScriptModel.model_construct(path="../pickle.pt"), data, tmp_path / "sub")


@pytest.mark.parametrize(
    ("spec", "shape"),
    [
        (MLPModel(hidden=(8,), dropout=0.1), SIGNAL),
        (CNN1DModel(channels=4), SIGNAL),
        (CNNModel(channels=(4,), hidden=8), IMAGE),
        (CifarResNetModel(depth=8), IMAGE),
        (WideResNetModel(depth=10, widen=1, dropout=0.1), IMAGE),
    ],
)
def test_zoo_models_can_be_scripted_for_export(spec: Any, shape: tuple[int, ...]) -> None:
    data = _data(shape)
    model = build_classifier(spec, data, Path()).eval()
    x = data.test.x
    assert torch.allclose(_logits(_script(model), x), _logits(model, x), atol=1e-6)
    assert not F.softmax(_logits(model, x), -1).isnan().any()

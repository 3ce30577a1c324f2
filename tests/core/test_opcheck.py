"""The operator allowlist: legitimate models pass it in every format, hostile ones are refused by
the torch-free file checks and again by the engine before any forward (CPU, tiny models)."""

from __future__ import annotations

import io
import json
import pickle
import typing
import warnings
import zipfile
from pathlib import Path
from typing import Any

import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from core import modelcheck
from core.errors import UnsafeModelError
from core.export import export_student
from core.modelcheck import check_onnx_model, check_torchscript_code
from core.models import build_classifier
from core.models.programs import check_exported_program, check_script_module
from core.opcheck import refusal
from core.pt2check import check_pt2, check_sym_expr
from core.runner import run_job
from core.spec import (
    CifarResNetModel,
    CNN1DModel,
    CNNModel,
    MLPModel,
    OnnxModel,
    Pt2Model,
    TorchScriptModel,
    TorchvisionArch,
    TorchvisionModel,
    WideResNetModel,
    parse_spec,
)
from tests.core.test_models import _data

SECRET = "TOP-SECRET-ROW-4242"


@torch.library.custom_op("distillery_test::leak", mutates_args=())
def _leak(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@_leak.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class Reader(nn.Module):
    """Reads a file into its logits: what an upload must never be able to do."""

    def __init__(self, path: str, size: int) -> None:
        super().__init__()
        self.path = path
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        leaked = torch.from_file(self.path, False, self.size, dtype=torch.uint8)
        return x[:, :3] * 0 + leaked.float().sum()


class Writer(nn.Module):
    """``from_file(shared=True)`` creates the file and maps it: writing the tensor writes the file."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mapped = torch.from_file(self.path, True, 16, dtype=torch.uint8)
        mapped.fill_(65)
        return x[:, :3] + mapped.float().sum()


class Custom(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.distillery_test.leak(x[:, :3])


class OnLoad(nn.Module):
    """Its ``__setstate__`` runs inside ``torch.jit.load``, before any forward."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.size = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :3]

    @torch.jit.export
    def __getstate__(self) -> tuple[str, int, bool]:
        return (self.path, self.size, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, int, bool]) -> None:
        self.path, self.training = state[0], state[2]
        self.size = int(torch.from_file(self.path, True, 16, dtype=torch.uint8).fill_(66).sum())


def _save_script(module: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated upstream
        torch.jit.script(module).save(str(path))
    return path


def _check_archive(path: Path) -> None:
    with zipfile.ZipFile(path) as archive:
        check_torchscript_code(archive, archive.namelist()[0].split("/", 1)[0])


# ------------------------------------------------------------------ the allowlist itself


def test_the_allowlist_names_pure_operators_and_refuses_the_rest() -> None:
    for op in ("aten::conv2d", "aten::relu_", "aten::add.Tensor", "prim::CallMethod", "aten::dropout"):
        assert refusal(op) is None, op
    assert "files" in str(refusal("aten::from_file"))
    assert "custom operator" in str(refusal("distillery_test::leak"))
    for op in (
        "prim::Print",
        "aten::set_",
        "aten::resize_",
        "c10d::allreduce_",
        "rpc::rpc_async",
        "aten::foo",
    ):
        assert refusal(op) is not None, op


# ------------------------------------------------------------------ legitimate models pass

SIGNAL, IMAGE = (40,), (3, 16, 16)
ZOO = [
    (MLPModel(hidden=(8,), dropout=0.1), SIGNAL),
    (MLPModel(hidden=(8,)), IMAGE),
    (CNN1DModel(channels=4), SIGNAL),
    (CNNModel(channels=(4,), hidden=8, dropout=0.1), IMAGE),
    (CifarResNetModel(depth=8), IMAGE),
    (WideResNetModel(depth=10, widen=1, dropout=0.1), IMAGE),
] + [
    pytest.param(TorchvisionModel(arch=arch), (3, 32, 32), marks=pytest.mark.slow)
    for arch in typing.get_args(TorchvisionArch)
]


@pytest.mark.parametrize(("spec", "shape"), ZOO, ids=lambda v: getattr(v, "arch", getattr(v, "kind", "")))
def test_every_shipped_architecture_passes_in_every_format(
    spec: Any, shape: tuple[int, ...], tmp_path: Path
) -> None:
    data = _data(shape)
    model = build_classifier(spec, data, Path()).eval()
    x = data.test.x[:2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, compiled in (("script", torch.jit.script(model)), ("trace", torch.jit.trace(model, x))):
            compiled.save(str(tmp_path / f"{name}.pt"))
            _check_archive(tmp_path / f"{name}.pt")
            check_script_module(torch.jit.load(str(tmp_path / f"{name}.pt")))
    program = torch.export.export(model, (torch.cat([x, x]),), dynamic_shapes=({0: torch.export.Dim("b")},))
    torch.export.save(program, str(tmp_path / "m.pt2"))
    with zipfile.ZipFile(tmp_path / "m.pt2") as archive:
        check_pt2(archive)
    check_exported_program(torch.export.load(str(tmp_path / "m.pt2")))


@pytest.mark.parametrize(("spec", "shape"), ZOO[:6], ids=lambda v: getattr(v, "kind", ""))  # ours
def test_the_project_s_onnx_exports_pass(spec: Any, shape: tuple[int, ...], tmp_path: Path) -> None:
    data = _data(shape)
    model = build_classifier(spec, data, Path()).eval()
    export_student(model, sample=data.test.x[:4], formats=["onnx"], out_dir=tmp_path, spec_json="{}")
    summary = check_onnx_model(onnx.load(str(tmp_path / "student.onnx")))
    assert summary["operators"] and summary["opset_domains"] == [""]


# ------------------------------------------------------------------ hostile TorchScript


def _hostile(tmp_path: Path) -> dict[str, tuple[nn.Module, Path]]:
    secret = tmp_path / "secret.db"
    secret.write_text(SECRET)
    return {
        "reader": (Reader(str(secret), len(SECRET)), secret),
        "writer": (Writer(str(tmp_path / "written.bin")), tmp_path / "written.bin"),
        "on_load": (OnLoad(str(tmp_path / "loaded.bin")), tmp_path / "loaded.bin"),
        "custom": (Custom(), tmp_path / "absent"),
    }


@pytest.mark.parametrize("case", ["reader", "writer", "on_load", "custom"])
def test_the_engine_refuses_a_hostile_teacher_before_running_it(case: str, tmp_path: Path) -> None:
    module, target = _hostile(tmp_path)[case]
    _save_script(module, tmp_path / "teacher.pt")
    expected = "distillery_test::leak" if case == "custom" else "aten::from_file"
    with pytest.raises(UnsafeModelError, match=expected) as info:
        build_classifier(TorchScriptModel(path="teacher.pt"), _data(SIGNAL), tmp_path)
    assert SECRET not in str(info.value)
    if case != "reader":
        assert not target.exists()  # nothing was written, not even while loading


def test_a_hostile_teacher_named_in_a_spec_fails_the_job_as_unsafe_model(tmp_path: Path) -> None:
    _save_script(Writer(str(tmp_path / "written.bin")), tmp_path / "teacher.pt")
    spec = parse_spec(
        {
            "data": {"kind": "mnist1d", "train_limit": 100},
            "teacher": {"model": {"kind": "torchscript", "path": "teacher.pt"}},
            "student": {"model": {"kind": "mlp", "hidden": [8]}},
            "distill": {"epochs": 1},
            "runtime": {"measure_speed": False},
        }
    )
    with pytest.raises(UnsafeModelError) as info:
        run_job(spec, tmp_path / "out", data_root=tmp_path, device="cpu")
    assert info.value.type == "unsafe_model" and "aten::from_file" in str(info.value)
    assert not (tmp_path / "written.bin").exists()


def _archive_with(code: str, tmp_path: Path) -> Path:
    path = tmp_path / "forged.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("m/code/__torch__/m.py", code)
        archive.writestr("m/data.pkl", b"")
    return path


FORGED = {
    "ops.myns.op(x)": "myns::op",
    "torch.ops.myns.op(x)": "myns::op",
    "torch.ops.aten.from_file('f', True, 1)": "aten::from_file",
    "x.from_file('f')": "aten::from_file",
    "getattr(x, 'from_file')('f')": "from_file",
    "print(x)": "prim::Print",
    "fork(x)": "prim::fork",
    "open('f')": "unknown name 'open'",
    "__torch__.torch.classes.myns.Leak(x)": "does not define",
    "getattr(x, name)": "computed attribute name",
}


@pytest.mark.parametrize(("call", "named"), FORGED.items())
def test_forged_code_is_refused_by_the_text_check(call: str, named: str, tmp_path: Path) -> None:
    signature = "def forward(self: __torch__.m.M, x: Tensor, name: str) -> Tensor:"
    code = f"class M(Module):\n  {signature}\n    return {call}\n"
    with pytest.raises(UnsafeModelError, match=named):
        _check_archive(_archive_with(code, tmp_path))


def test_forged_syntax_and_shadowed_globals_are_refused(tmp_path: Path) -> None:
    for body in (
        "p = print\n    return p(x)",
        "import os\n    return x",
        "lambda: x",
        "print = x\n    return print",
    ):
        code = f"class M(Module):\n  def forward(self: __torch__.m.M, x: Tensor) -> Tensor:\n    {body}\n"
        with pytest.raises(UnsafeModelError):
            _check_archive(_archive_with(code, tmp_path))


# ------------------------------------------------------------------ ONNX


def _onnx(nodes: list[Any], **kwargs: Any) -> Any:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        **kwargs,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_onnx_custom_domains_external_data_and_subgraphs_are_refused() -> None:
    assert check_onnx_model(_onnx([helper.make_node("Relu", ["x"], ["y"])]))["operators"] == ["Relu"]
    with pytest.raises(UnsafeModelError, match=r"com\.microsoft::Leak"):
        check_onnx_model(_onnx([helper.make_node("Leak", ["x"], ["y"], domain="com.microsoft")]))
    weights = helper.make_tensor("w", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])
    weights.data_location = TensorProto.EXTERNAL
    weights.external_data.add(key="location", value="/etc/passwd")
    with pytest.raises(UnsafeModelError, match="external file"):
        check_onnx_model(_onnx([helper.make_node("Add", ["x", "w"], ["y"])], initializer=[weights]))
    branch = helper.make_graph(
        [helper.make_node("Leak", ["x"], ["z"], domain="evil")],
        "branch",
        [],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", 3])],
    )
    cond = helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)
    with pytest.raises(UnsafeModelError, match="evil::Leak"):
        check_onnx_model(_onnx([cond]))


# ------------------------------------------------------------------ torch.export


def _pt2(module: nn.Module, path: Path) -> Path:
    program = torch.export.export(module, (torch.randn(4, 5),), dynamic_shapes=({0: torch.export.Dim("b")},))
    torch.export.save(program, str(path))
    return path


def _rewrite(source: Path, target: Path, change: dict[str, bytes | None]) -> Path:
    """A copy of an archive with some entries replaced (or removed, or added)."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        root = old.namelist()[0].split("/", 1)[0]
        for name in old.namelist():
            relative = name[len(root) + 1 :]
            if relative not in change:
                new.writestr(name, old.read(name))
        for relative, data in change.items():
            if data is not None:
                new.writestr(f"{root}/{relative}", data)
    return target


class _Boom:
    def __reduce__(self) -> Any:
        return (print, ("unpickled",))


def test_pt2_pickles_custom_ops_and_evaluated_strings_are_refused(tmp_path: Path) -> None:
    good = _pt2(nn.Sequential(nn.Linear(5, 3), nn.ReLU()), tmp_path / "good.pt2")
    with zipfile.ZipFile(good) as archive:
        assert "torch.ops.aten.linear.default" in check_pt2(archive)["operators"]
        root = archive.namelist()[0].split("/", 1)[0]
        program = json.loads(archive.read(f"{root}/models/model.json"))
        weights = json.loads(archive.read(f"{root}/data/weights/model_weights_config.json"))
    first = next(iter(weights["config"]))
    weights["config"][first]["use_pickle"] = True
    sample = io.BytesIO()
    torch.save({"x": _Boom()}, sample)
    program["graph_module"]["graph"]["nodes"][0]["target"] = "torch.ops.aten.from_file.default"
    cases = {
        "pickled weight": {"data/weights/model_weights_config.json": json.dumps(weights).encode()},
        "unsafe sample": {"data/sample_inputs/model.pt": sample.getvalue()},
        "opaque object": {"data/constants/opaque_obj_0": pickle.dumps(_Boom())},
        "from_file node": {"models/model.json": json.dumps(program).encode()},
    }
    for name, change in cases.items():
        bad = _rewrite(good, tmp_path / f"{name.replace(' ', '_')}.pt2", change)
        with zipfile.ZipFile(bad) as archive, pytest.raises(UnsafeModelError):
            check_pt2(archive)
    for expr in ("__import__('os').system('id')", "Symbol('s0').__class__", "s0.func"):
        with pytest.raises(UnsafeModelError, match="plain arithmetic"):
            check_sym_expr(expr)
    check_sym_expr("Symbol('s77', positive=True, integer=True)")
    check_sym_expr("FloorDiv(s0 + 2*s1, 3) <= 7")


def test_a_pt2_custom_operator_is_refused_by_file_and_by_engine(tmp_path: Path) -> None:
    class CustomPt2(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ops.distillery_test.leak(x)[:, :3]

    path = _pt2(CustomPt2(), tmp_path / "custom.pt2")
    with zipfile.ZipFile(path) as archive, pytest.raises(UnsafeModelError, match="distillery_test::leak"):
        check_pt2(archive)
    with pytest.raises(UnsafeModelError, match="distillery_test::leak"):
        build_classifier(Pt2Model(path="custom.pt2"), _data((5,)), tmp_path)


def test_a_bad_onnx_file_is_refused_by_the_engine(tmp_path: Path) -> None:
    onnx.save(_onnx([helper.make_node("Leak", ["x"], ["y"], domain="evil")]), str(tmp_path / "t.onnx"))
    with pytest.raises(UnsafeModelError, match="evil::Leak"):
        build_classifier(OnnxModel(path="t.onnx"), _data((3,)), tmp_path)


def test_archive_entries_declaring_more_than_the_member_limit_are_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A code, JSON or pickle entry is read whole: one that declares gigabytes is a zip bomb."""
    script = _save_script(nn.Sequential(nn.Linear(5, 3), nn.ReLU()), tmp_path / "model.pt")
    program = _pt2(nn.Sequential(nn.Linear(5, 3), nn.ReLU()), tmp_path / "model.pt2")
    _check_archive(script)
    with zipfile.ZipFile(program) as archive:
        check_pt2(archive)
    monkeypatch.setattr(modelcheck, "MAX_MEMBER_BYTES", 100)
    with pytest.raises(UnsafeModelError, match="more than the 100 allowed"):
        _check_archive(script)
    with zipfile.ZipFile(program) as archive, pytest.raises(UnsafeModelError, match="more than the 100"):
        check_pt2(archive)

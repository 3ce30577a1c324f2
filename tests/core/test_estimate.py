"""The spec-only estimate against the real modules, and the limits it enforces."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from core.errors import OutOfMemoryError, SpecError
from core.estimate import (
    DataShape,
    Limits,
    check_limits,
    data_shape,
    estimate,
    net_cost,
    sci,
)
from core.models import build_net, count_params
from core.runner import JobRun, run_job
from core.spec import (
    CifarResNetModel,
    CNN1DModel,
    CNNModel,
    MLPModel,
    TorchvisionArch,
    TorchvisionModel,
    WideResNetModel,
    load_spec,
    parse_spec,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SIGNAL = DataShape((40,), 10, 4000, 1000, 4)
IMAGE = DataShape((3, 32, 32), 10, 50_000, 10_000, 1)
DIGITS = DataShape((1, 8, 8), 10, 1437, 360, 4)
BIG = DataShape((3, 96, 96), 7, 100, 10, 1)

CASES: list[tuple[Any, DataShape]] = [
    (MLPModel(), SIGNAL),
    (MLPModel(hidden=(64, 32), activation="gelu", dropout=0.2), IMAGE),
    (MLPModel(hidden=(), activation="tanh"), DIGITS),
    (CNN1DModel(), SIGNAL),
    (CNN1DModel(channels=128, layers=1), SIGNAL),
    (CNNModel(), IMAGE),
    (CNNModel(channels=(32, 64, 64, 64, 64), hidden=256, dropout=0.5), DIGITS),
    (CifarResNetModel(depth=20), IMAGE),
    (CifarResNetModel(depth=8, width=4), DIGITS),
    (WideResNetModel(depth=16, widen=2), IMAGE),
    (WideResNetModel(depth=10, widen=1, dropout=0.3), DIGITS),
    *[(TorchvisionModel(arch=arch), IMAGE) for arch in get_args(TorchvisionArch)],  # type: ignore[arg-type]
    (TorchvisionModel(arch="resnet18"), DIGITS),
    (TorchvisionModel(arch="mobilenet_v3_small"), BIG),
]


def kept_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd keeps for the backward pass of one forward (weights excluded), by storage."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(x)
        torch.log_softmax(logits, 1)  # the loss keeps the logits' softmax
    return sum(kept.values())


def real_macs(model: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops()) // 2


def case_id(value: Any) -> str:
    if isinstance(value, DataShape):
        return "x".join(map(str, value.input_shape))
    return str(getattr(value, "arch", None) or value.kind)


@pytest.mark.parametrize(("spec", "shape"), CASES, ids=case_id)
def test_the_estimate_matches_the_real_model(spec: Any, shape: DataShape) -> None:
    cost = net_cost(spec, shape)
    assert cost is not None
    torch.manual_seed(0)
    net = build_net(spec, shape.input_shape, shape.num_classes).train()
    assert cost.params == count_params(net)
    batch = 4
    x = torch.randn(batch, *shape.input_shape)
    real = kept_bytes(net, x) / (4 * batch)  # float32 values per sample
    assert real / 2 <= cost.kept <= real * 2, (cost.kept, real)
    macs = real_macs(net.eval(), x[:1])
    assert macs / 1.5 <= cost.macs <= macs * 1.5, (cost.macs, macs)


def test_every_example_validates_within_the_default_limits() -> None:
    examples = sorted(EXAMPLES.glob("*.yaml"))
    assert examples
    for path in examples:
        spec = load_spec(path)
        est = estimate(spec)
        assert check_limits(est, Limits()) == [], path.name
        assert all(m.params for m in est.models) and est.peak_memory > 0


def refused(data: dict[str, Any], limits: Limits | None = None) -> dict[str, str]:
    violations = check_limits(estimate(parse_spec(data)), limits or Limits())
    return {v.field: v.message for v in violations}


def test_an_oversized_mlp_is_refused_naming_its_hidden_layers() -> None:
    found = refused({"student": {"model": {"kind": "mlp", "hidden": [100000, 100000]}}})
    assert "student.model.hidden" in found
    assert found["student.model.hidden"].startswith("about 1e10 parameters, over this service's limit of 1e9")
    assert "(DISTILLERY_MAX_PARAMS)" in found["student.model.hidden"]


def test_a_cnn_with_huge_channels_is_refused() -> None:
    spec = {
        "data": {"kind": "cifar10"},
        "teacher": {"model": {"kind": "cnn", "channels": [100000, 100000]}},
        "student": {"model": {"kind": "cnn"}},
    }
    found = refused(spec)
    assert "DISTILLERY_MAX_PARAMS" in found["teacher.model.channels"]


def test_activations_at_a_huge_batch_name_the_batch_size() -> None:
    spec = {"data": {"kind": "cifar10"}, "student": {"model": {"kind": "cifar_resnet", "depth": 110}}}
    spec["distill"] = {"batch_size": 65536}
    found = refused(spec, Limits(max_job_memory=8 << 30))
    assert "DISTILLERY_MAX_JOB_MEMORY" in found["distill.batch_size"]


def test_enormous_datasets_are_refused() -> None:
    synthetic = {"kind": "synthetic", "size": 512, "train_size": 5_000_000}
    assert "DISTILLERY_MAX_DATASET_BYTES" in refused({"data": synthetic})["data.train_size"]
    folder = {"kind": "imagefolder", "path": "faces", "image_size": 512, "train_limit": 50_000_000}
    found = refused(
        {"data": folder, "student": {"model": {"kind": "cnn"}}, "teacher": {"model": {"kind": "cnn"}}}
    )
    assert "DISTILLERY_MAX_DATASET_BYTES" in found["data.train_limit"]


def test_epoch_work_has_its_limit() -> None:
    spec = {"data": {"kind": "cifar10"}, "student": {"model": {"kind": "torchvision", "arch": "resnet50"}}}
    found = refused(spec, Limits(max_epoch_work=10**14))
    assert "DISTILLERY_MAX_EPOCH_WORK" in found["student.model.arch"]


def test_the_pruned_teachers_stage_is_estimated_at_the_students_batch_size() -> None:
    """``compress: [{kind: teacher}]`` trains the teacher's architecture again (stage
    ``teacher_pruned``) at ``distill.batch_size``: a batch the teacher's own stage never used."""
    base = {
        "teacher": {"model": {"kind": "cnn1d", "channels": 64}, "train": {"batch_size": 10}},
        "distill": {"batch_size": 2000},
    }
    plain = estimate(parse_spec(base))
    spec = parse_spec({**base, "compress": [{"kind": "teacher"}]})
    est = estimate(spec)
    assert [s.name for s in est.stages] == [*(s.name for s in plain.stages), "teacher_pruned"]
    pruned = est.stages[-1]
    assert pruned.model == est.stages[0].model and pruned.batch_size == 2000
    assert est.peak_memory > plain.peak_memory  # the teacher at the student's batch is the peak
    assert [
        s.name
        for s in estimate(parse_spec({**base, "compress": [{"kind": "teacher", "prune": False}]})).stages
    ] == [s.name for s in plain.stages]


def test_the_spec_bounds_lists_and_sizes() -> None:
    with pytest.raises(SpecError, match=r"distill\.losses: .*at most"):
        parse_spec({"distill": {"losses": [{"kind": "ce"}] * 100}})
    with pytest.raises(SpecError, match=r"student\.model\.mlp\.hidden"):
        parse_spec({"student": {"model": {"kind": "mlp", "hidden": [10] * 1000}}})
    with pytest.raises(SpecError, match=r"data\.synthetic\.train_size"):
        parse_spec({"data": {"kind": "synthetic", "train_size": 10**12}})
    with pytest.raises(SpecError, match=r"max_shift"):
        parse_spec({"distill": {"transfer": {"augment": [{"kind": "shift", "max_shift": 10**9}]}}})


def test_uploads_give_the_estimate_their_shapes() -> None:
    spec = parse_spec(
        {
            "data": {"kind": "npz", "path": "uploads/datasets/a.npz"},
            "teacher": {"model": {"kind": "torchscript", "path": "uploads/models/t.pt"}},
        }
    )
    blind = estimate(spec)
    assert blind.datasets[0].bytes is None and blind.models[1].lower_bound
    summary = {
        "input_shape": [3, 16, 16],
        "num_classes": 5,
        "train_size": 900,
        "test_size": 100,
        "dtype": "uint8",
    }
    est = estimate(spec, uploads={"uploads/datasets/a.npz": summary}, files={"uploads/models/t.pt": 4000})
    assert est.datasets[0].bytes == 1000 * (768 + 8)
    assert est.models[0].params == 1000  # the teacher file's bytes as float32 weights
    assert est.models[1].params == 768 * 100 + 100 + 100 * 100 + 100 + 100 * 5 + 5
    assert data_shape(spec.data).shape_known is False


def test_the_largest_spec_the_bounds_allow_is_estimated_without_overflow() -> None:
    spec = {
        "data": {"kind": "synthetic", "size": 512, "channels": 16, "train_size": 10**8, "test_size": 10**8},
        "student": {"model": {"kind": "mlp", "hidden": [2**20] * 64, "activation": "gelu", "dropout": 0.5}},
        "distill": {
            "batch_size": 65536,
            "losses": [{"kind": "source_consistency", "source": {"kind": "mnist1d"}, "batch_size": 65536}]
            * 16,
        },
    }
    found = refused(spec)
    assert {"student.model.hidden", "data.train_size"} <= set(found)


def test_absurd_numbers_format_without_overflow() -> None:
    assert sci(10**400).endswith("e400") and sci(31_999_999_999) == "3.2e10" and sci(999) == "999"
    assert sci(996_000) == "1e6"


# ---------------------------------------------------------------- out of memory, impossible sizes

SMALL_JOB: dict[str, Any] = {
    "data": {"kind": "mnist1d", "train_limit": 100},
    "teacher": {"model": {"kind": "cnn1d", "channels": 4}, "train": {"epochs": 1}},
    "student": {"model": {"kind": "mlp", "hidden": [8]}},
    "distill": {"epochs": 1},
    "export": [],
    "runtime": {"measure_speed": False},
}


def raising(error: BaseException) -> Any:
    def run(self: JobRun) -> dict[str, Any]:
        raise error

    return run


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
        MemoryError(),
        RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),
        RuntimeError("MPS backend out of memory"),
        RuntimeError("not enough memory: you tried to allocate 123 bytes"),
    ],
    ids=["cuda", "python", "cpu-allocator", "mps", "not-enough"],
)
def test_the_runner_types_out_of_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    monkeypatch.setattr(JobRun, "run", raising(error))
    with pytest.raises(OutOfMemoryError, match="ran out of memory") as caught:
        run_job(parse_spec(SMALL_JOB), tmp_path, data_root=tmp_path, device="cpu")
    assert caught.value.type == "out_of_memory" and caught.value.__cause__ is error


def test_other_errors_pass_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    error = RuntimeError("mat1 and mat2 shapes cannot be multiplied")
    monkeypatch.setattr(JobRun, "run", raising(error))
    with pytest.raises(RuntimeError) as caught:
        run_job(parse_spec(SMALL_JOB), tmp_path, data_root=tmp_path, device="cpu")
    assert caught.value is error


def real_error(make: Any) -> BaseException:
    try:
        make()
    except (RuntimeError, OverflowError, TypeError) as e:
        return e
    raise AssertionError("no error")


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.empty(-1),
        lambda: torch.empty(2**62, 2**62),
        lambda: torch.nn.Linear(2**31, 2**31),
        lambda: torch.zeros(10**30),
    ],
    ids=["negative", "storage-overflow", "linear-overflow", "python-int"],
)
def test_impossible_sizes_are_a_bad_spec_not_an_internal_error(tmp_path: Path, make: Any) -> None:
    from core.oom import translate_oom

    typed = translate_oom(real_error(make))
    assert isinstance(typed, SpecError) and typed.type == "bad_spec"
    assert "too large to exist" in str(typed)


@pytest.mark.skipif(
    Path("/proc/sys/vm/overcommit_memory").read_text().strip() == "1",
    reason="with overcommit always on, a 4 TB allocation would succeed and then really exhaust memory",
)
def test_a_model_too_big_for_the_host_fails_as_out_of_memory(tmp_path: Path) -> None:
    """No limit is checked by the engine itself: a 4 TB layer reaches the allocator, which refuses it."""
    spec = parse_spec({**SMALL_JOB, "teacher": {"model": {"kind": "mlp", "hidden": [2**20, 2**20]}}})
    with pytest.raises(OutOfMemoryError, match="can't allocate memory"):
        run_job(spec, tmp_path, data_root=tmp_path, device="cpu")

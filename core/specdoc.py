"""Generates docs/spec.md, the spec reference, from the pydantic models themselves.

    python -m core.specdoc > docs/spec.md

A test regenerates it and compares, so the reference cannot drift from the code.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from core import spec as S

SECTIONS: list[tuple[str, list[type[BaseModel]]]] = [
    (
        "Job",
        [
            S.JobSpec,
            S.TeacherSpec,
            S.StudentSpec,
            S.DistillSpec,
            S.TransferSpec,
            S.TrainSpec,
            S.BaselineSpec,
            S.ResourcesSpec,
            S.RuntimeSpec,
        ],
    ),
    (
        "Datasets (`data`, `teacher.data`, `transfer.unlabelled`, `source`)",
        [S.MNIST1DData, S.DigitsData, S.SyntheticData, S.TorchvisionData, S.ImageFolderData, S.NpzData],
    ),
    (
        "Models (`teacher.model`, `student.model`)",
        [
            S.MLPModel,
            S.CNN1DModel,
            S.CNNModel,
            S.CifarResNetModel,
            S.WideResNetModel,
            S.TorchvisionModel,
            S.TorchScriptModel,
            S.OnnxModel,
            S.Pt2Model,
        ],
    ),
    (
        "Losses (`distill.losses`)",
        [
            S.CELoss,
            S.KDLoss,
            S.LogitMSELoss,
            S.HintLoss,
            S.AttentionLoss,
            S.DKDLoss,
            S.WeightL2Loss,
            S.SourceConsistencyLoss,
        ],
    ),
    (
        "Augmentations (`transfer.augment`, `train.augment`)",
        [S.MixupAug, S.CutmixAug, S.MaskAug, S.ReplaceAug, S.NoiseAug, S.ShiftAug, S.CropAug, S.FlipAug],
    ),
    (
        "Optimizers and schedules",
        [
            S.SGDOptim,
            S.AdamOptim,
            S.AdamWOptim,
            S.ConstantSchedule,
            S.StepSchedule,
            S.CosineSchedule,
            S.InverseTimeSchedule,
        ],
    ),
    ("Compression (`compress`)", [S.DynamicInt8Compress, S.PruneCompress, S.TeacherCompress]),
]


def type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is typing.Annotated:
        return type_name(get_args(tp)[0])
    if origin is Literal:
        return " \\| ".join(json.dumps(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        kinds = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if kinds and len(kinds) == len([a for a in args if a is not type(None)]):
            names = "one of " + ", ".join(_kind(k) for k in kinds)
            return names + (" or null" if type(None) in args else "")
        return " \\| ".join("null" if a is type(None) else type_name(a) for a in args)
    if origin is tuple:
        args = get_args(tp)
        return f"list of {type_name(args[0])}" if len(args) == 2 and args[1] is Ellipsis else "list"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return f"`{tp.__name__}`"
    return getattr(tp, "__name__", str(tp))


def _kind(model: type[BaseModel]) -> str:
    field = model.model_fields.get("kind")
    return "/".join(f"`{a}`" for a in get_args(field.annotation)) if field else model.__name__


def default_text(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        shown = value.model_dump(mode="json", exclude_defaults=True)
        if "kind" in type(value).model_fields:
            shown = {"kind": value.kind, **shown}  # type: ignore[attr-defined]
        return "`" + json.dumps(shown) + "`"
    if isinstance(value, tuple):
        value = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
    return "`" + json.dumps(value) + "`"


def render_model(model: type[BaseModel]) -> list[str]:
    title = _kind(model) if "kind" in model.model_fields else f"`{model.__name__}`"
    doc = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    lines = [f"### {title}", ""]
    if doc:
        lines += [doc, ""]
    lines += ["| field | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if name == "kind":
            continue
        desc = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{name}` | {type_name(field.annotation)} | {default_text(field)} | {desc} |")
    return [*lines, ""]


def render() -> str:
    lines = [
        "# Job spec reference",
        "",
        "Generated from `core/spec.py` by `python -m core.specdoc` (a test keeps it in step). Every field",
        "has a default, so `{}` is a complete spec: the MNIST-1D recipe of `examples/mnist1d.yaml`.",
        "Unknown fields are refused; each `kind` selects one of the tables below. Paths are relative",
        "to the data root (`--data-root`, `DISTILLERY_DATA_ROOT`) and cannot leave it. The machine-readable",
        "form is the JSON Schema printed by `distill schema`.",
        "",
    ]
    for title, models in SECTIONS:
        lines += [f"## {title}", ""]
        for model in models:
            lines += render_model(model)
    lines += LIMITS.strip().splitlines()
    return "\n".join(lines).rstrip() + "\n"


# Written, not generated: what core.estimate checks before a job is stored.
LIMITS = """
## Limits

A spec is checked twice before a job is stored. Hard bounds in the spec itself (list lengths,
widths, dataset sizes, epochs, batch sizes: the JSON Schema states them) refuse what no service
should run. Then a torch-free estimate (`core/estimate.py`) works out, from the spec alone, each
model's parameters; the memory of the largest stage: weights, gradients, optimizer state (Adam 2
values per parameter, SGD with momentum 1) and the activations kept for the backward pass at the
stage's batch size, in float32 (teachers run in inference mode and keep none); each dataset's
bytes as loaded; and the multiply-accumulates of one epoch of each stage (3 forward passes' worth
for the trained model, plus the teachers' forward passes). The API refuses a spec over a limit
with a 422 naming the field to change; `distill validate` prints the estimate on stderr.

| setting | default | what it bounds |
|---|---|---|
| `DISTILLERY_MAX_PARAMS` | `1e9` | parameters of any one model |
| `DISTILLERY_MAX_JOB_MEMORY` | 64 GiB | bytes of the largest stage |
| `DISTILLERY_MAX_DATASET_BYTES` | 64 GiB | bytes of any one dataset |
| `DISTILLERY_MAX_EPOCH_WORK` | `1e17` | multiply-accumulates in one epoch of one stage |

An uploaded teacher file (TorchScript and the like) counts its bytes as float32 weights; an image
folder is counted from its `train_limit`, an uploaded archive from the summary made at upload.

A job that runs out of memory all the same (CUDA's out-of-memory error, the CPU allocator's
"can't allocate memory", Python's `MemoryError`) fails as `out_of_memory` and is not retried: it
would not fit the next time either. The worker's job process exits after every job, so the next
job starts at once in a fresh one. Sizes that cannot exist (overflowing or negative) fail as
`bad_spec`. The kernel's OOM killer ends the engine's process with SIGKILL; the engine runs in a
process of its own (`worker/engine_process.py`), so the worker's task sees the kill it did not
send and fails the job as `out_of_memory` all the same, at once and without a retry. On CPU
workers an address-space limit (`ulimit -v`, systemd's `LimitAS=`) makes the allocator fail
before the OOM killer acts; not on GPU workers, where the CUDA driver maps large address ranges.
"""


if __name__ == "__main__":
    print(render(), end="")

"""What a job spec can name: every ``kind`` of dataset, model, loss, augmentation, optimizer,
schedule and compression, and the export formats (served as ``GET /v1/catalog``).

Derived from ``core.spec``'s tagged unions, so the catalog cannot drift from what validation
accepts; importable without torch. Each entry carries the first line of its class's docstring
and its parameters (type, default, constraints, allowed values), enough for a form or a CLI's
help.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python

from core.spec import (
    SPEC_VERSION,
    ArchitectureSpec,
    AugmentSpec,
    CompressSpec,
    DatasetSpec,
    ExportFormat,
    LossSpec,
    ModelSpec,
    OptimizerSpec,
    ScheduleSpec,
)

EXPORT_FORMATS = {
    "safetensors": "The student's weights as safetensors, with its architecture in the report.",
    "torchscript": "The student as a TorchScript archive that takes raw inputs.",
    "onnx": "The student as an ONNX graph that takes raw inputs.",
    "pt2": "The student as a torch.export program (torch.export.load) that takes raw inputs.",
}

_CONSTRAINTS = {
    annotated_types.Ge: ("ge", "ge"),
    annotated_types.Gt: ("gt", "gt"),
    annotated_types.Le: ("le", "le"),
    annotated_types.Lt: ("lt", "lt"),
    annotated_types.MinLen: ("min_length", "min_length"),
    annotated_types.MaxLen: ("max_length", "max_length"),
}


def members(union: Any) -> list[type[BaseModel]]:
    """The classes of a tagged union such as ``DatasetSpec`` (``Annotated[Union[...], Field]``)."""
    inner = get_args(union)[0] if get_origin(union) is Annotated else union
    return [cls for cls in get_args(inner) if isinstance(cls, type) and issubclass(cls, BaseModel)]


def kinds_of(cls: type[BaseModel]) -> list[str]:
    """The ``kind`` tags a class answers to (one, or several for a ``Literal`` of names)."""
    return [str(tag) for tag in get_args(cls.model_fields["kind"].annotation)]


def first_line(cls: type) -> str | None:
    doc = cls.__doc__
    return doc.strip().splitlines()[0].strip() if doc and doc.strip() else None


def type_name(annotation: Any) -> str:
    """A short readable type: ``int``, ``float | null``, ``list[int]``, ``enum``, ``object``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return type_name(args[0])
    if origin is Literal:
        return "enum"
    if origin in (Union, types.UnionType):
        return " | ".join(dict.fromkeys(type_name(a) for a in args))  # a tagged union is one "object"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list[{type_name(args[0])}]"
        return "[" + ", ".join(type_name(a) for a in args) + "]"
    if annotation is type(None):
        return "null"
    if annotation in (int, float, bool, str):
        return str(annotation.__name__)
    return "object"


def _choices(annotation: Any) -> list[Any] | None:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _choices(args[0])
    if origin is Literal:
        return list(args)
    if origin in (Union, types.UnionType):
        found = [c for a in args if (c := _choices(a)) is not None]
        return [c for group in found for c in group] if found else None
    return None


def parameter(name: str, field: FieldInfo) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "type": type_name(field.annotation),
        "required": field.is_required(),
        "description": field.description,
    }
    if not field.is_required():
        default = (
            field.default
            if field.default is not PydanticUndefined
            else field.get_default(call_default_factory=True, validated_data={})
        )
        entry["default"] = to_jsonable_python(default)
    if (choices := _choices(field.annotation)) is not None:
        entry["choices"] = choices
    constraints = {
        key: getattr(meta, attr)
        for meta in field.metadata
        for cls, (key, attr) in _CONSTRAINTS.items()
        if isinstance(meta, cls)
    }
    if constraints:
        entry["constraints"] = constraints
    return entry


def entries(union: Any, **extra: Any) -> list[dict[str, Any]]:
    """One entry per ``kind`` of a union, with its description and parameters."""
    out = []
    for cls in members(union):
        params = [parameter(n, f) for n, f in cls.model_fields.items() if n != "kind"]
        for kind in kinds_of(cls):
            out.append({"kind": kind, "description": first_line(cls), "parameters": params, **extra})
    return out


def catalog() -> dict[str, Any]:
    """Everything a spec can name, grouped as in the spec."""
    architectures = {k for cls in members(ArchitectureSpec) for k in kinds_of(cls)}
    models = entries(ModelSpec)
    for model in models:
        # Students must be registry architectures; a TorchScript file can only be a teacher.
        model["student"] = model["kind"] in architectures
    return {
        "spec_version": SPEC_VERSION,
        "datasets": entries(DatasetSpec),
        "models": models,
        "losses": entries(LossSpec),
        "augmentations": entries(AugmentSpec),
        "optimizers": entries(OptimizerSpec),
        "schedules": entries(ScheduleSpec),
        "compressions": entries(CompressSpec),
        "export_formats": [
            {"kind": kind, "description": EXPORT_FORMATS.get(kind)} for kind in get_args(ExportFormat)
        ],
    }

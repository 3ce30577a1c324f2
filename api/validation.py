"""Spec validation errors as problem fields: one ``{field, message}`` per problem.

Paths follow ``core.spec.format_validation_error`` (``distill.losses.0.kind``), with two fixes
for tagged unions: pydantic puts the tag in the path (``distill.losses.0.kd.temperature``),
which is dropped, and an unknown or missing tag is reported at the ``kind`` field itself, with
the allowed kinds in the message.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import TypeAdapter, ValidationError

from core.errors import FieldIssue, InvalidDocumentError
from core.spec import JobSpec

_PATH_IN_MESSAGE = re.compile(r"^([A-Za-z_]\w*(?:\.\w+)*): ")


def _strip_tags(loc: tuple[Any, ...], data: Any) -> list[Any]:
    """The location without the tag segments pydantic inserts for tagged unions."""
    path: list[Any] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("kind") == part:
            continue  # the tag of the union member that validated this dict
        path.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list | tuple) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
    return path


def field_errors(error: ValidationError, data: Any, prefix: str = "") -> list[FieldIssue]:
    items = error.errors(include_url=False)
    locs = [tuple(item["loc"]) for item in items]
    out = []
    for item, loc in zip(items, locs, strict=True):
        # A tuple whose items failed also reports itself "too short, 0 after validation": noise.
        if item["type"] == "too_short" and any(other[: len(loc)] == loc != other for other in locs):
            continue
        path = _strip_tags(loc, data)
        message = item["msg"].removeprefix("Value error, ")
        ctx = item.get("ctx") or {}
        if item["type"] == "union_tag_invalid":
            path.append(str(ctx.get("discriminator", "kind")).strip("'"))
            message = f"unknown kind {ctx.get('tag')!r}; expected one of: {ctx.get('expected_tags')}"
        elif item["type"] == "union_tag_not_found":
            path.append(str(ctx.get("discriminator", "kind")).strip("'"))
            message = "a 'kind' is required here"
        elif not path and (match := _PATH_IN_MESSAGE.match(message)):
            # Cross-field checks name their field in the message ("export: listed twice").
            path, message = match.group(1).split("."), message[match.end() :]
        field = ".".join(str(p) for p in path)
        out.append(FieldIssue(".".join(filter(None, [prefix, field])) or "(spec)", message))
    return out


def invalid_document(what: str, errors: list[FieldIssue]) -> InvalidDocumentError:
    return InvalidDocumentError(what, errors)


def validate_spec(data: Any) -> JobSpec:
    """A ``JobSpec`` from a request body, or a 422 problem naming every offending field."""
    if not isinstance(data, dict):
        raise invalid_document(
            "spec", [FieldIssue("(spec)", f"must be a JSON object, not {type(data).__name__}")]
        )
    try:
        return JobSpec.model_validate(data)
    except ValidationError as e:
        raise invalid_document("spec", field_errors(e, data)) from None


def validate_with(adapter: TypeAdapter[Any], data: Any, *, what: str, field: str) -> Any:
    """Validate a sub-document (an uploaded model's architecture) with paths under ``field``."""
    try:
        return adapter.validate_python(data)
    except ValidationError as e:
        raise invalid_document(what, field_errors(e, data, prefix=field)) from None

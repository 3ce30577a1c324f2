"""The files a spec names under the data root, found without building anything (torch-free).

The API uses this to check that a spec names only its own team's uploads; the worker, to let a
job's confined engine process read exactly those uploads and no other.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from typing import Any

PATH_FIELDS = ("path", "folder", "checkpoint")  # the spec's fields that name files under the data root
UPLOADS = "uploads"  # the folder of uploaded models and datasets under the data root


def normal(path: str) -> str:
    return posixpath.normpath(path.replace("\\", "/"))


def named_paths(value: Any, field: str = "") -> Iterator[tuple[str, str]]:
    """(field, path) for every string of a spec (as JSON data) in a path field."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from named_paths(item, f"{field}.{key}" if field else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from named_paths(item, f"{field}.{i}")
    elif isinstance(value, str) and field.rsplit(".", 1)[-1] in PATH_FIELDS:
        yield field, value


def named_uploads(spec: Any) -> Iterator[tuple[str, str]]:
    """(field, path as written) for every uploaded file a spec names."""
    for field, path in named_paths(spec):
        if normal(path).split("/")[0] == UPLOADS:
            yield field, path

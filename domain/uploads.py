"""Uploaded teachers and datasets: who may see which, the team's storage quota, and recording a
checked file under its final name.

The API streams a file to a temporary name inside its final folder and checks its content
(``api/routes/uploads.py``); ``record`` then admits it against the team's storage quota (under the
team's lock), renames it into place and commits its row, so a refused or half-written file is
never visible under a name a spec could use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from core.errors import NotFoundError
from core.paths import UPLOADS
from store.identity import Caller
from store.models import Upload, new_id
from store.quotas import admit_upload
from store.uploads import uploads_of

KINDS = ("model", "dataset")
PROGRAM_FORMATS = ("torchscript", "onnx", "pt2")
"""Teacher formats that carry their own architecture (safetensors weights need one named)."""
SUFFIXES = {"torchscript": "pt", "onnx": "onnx", "pt2": "pt2", "safetensors": "safetensors", "npz": "npz"}


@dataclass(frozen=True)
class Staged:
    """A received file under a temporary name in its final folder, with its size and SHA-256."""

    tmp: Path
    size: int
    sha256: str


def folder(data_root: Path, kind: str) -> Path:
    """Where uploads of ``kind`` live under the data root (specs name them relative to it)."""
    return data_root / UPLOADS / f"{kind}s"


def stored_filename(name: str | None) -> str:
    """The client's file name as a label: printable characters only (no NUL, which PostgreSQL
    cannot store, no control characters), at most 300 of them. It never names a path."""
    return "".join(c for c in (name or "") if c.isprintable())[:300]


def record(
    session: Session,
    caller: Caller,
    data_root: Path,
    staged: Staged,
    *,
    kind: str,
    fmt: str,
    filename: str | None,
    details: dict[str, Any],
) -> Upload:
    """Admit a checked file against the caller's team's storage quota (``QuotaExceededError``),
    move it to its final name and commit its row; the move is undone if the commit fails.

    Commits itself: the row and the file must appear together, and the lock on the team (taken
    by the quota check) is held until the file is in place.
    """
    upload_id = new_id()
    upload = Upload(
        id=upload_id,
        kind=kind,
        format=fmt,
        filename=stored_filename(filename),
        path=f"{UPLOADS}/{kind}s/{upload_id}.{SUFFIXES[fmt]}",
        size=staged.size,
        sha256=staged.sha256,
        details=details,
        owner=caller.user,
        team=caller.team,
    )
    admit_upload(session, caller.team, staged.size)
    final = data_root / upload.path
    os.chmod(staged.tmp, 0o644)
    os.replace(staged.tmp, final)
    try:
        session.add(upload)
        session.commit()
    except BaseException:
        final.unlink(missing_ok=True)
        raise
    return upload


def list_visible(session: Session, caller: Caller, kind: str) -> list[Upload]:
    """Newest first: every team's for an admin, the caller's team's otherwise."""
    return uploads_of(session, kind, team=None if caller.is_admin else caller.team)


def get_visible(session: Session, caller: Caller, kind: str, upload_id: str) -> Upload:
    """An upload of ``kind`` the caller may see; another team's is as missing as one that does
    not exist (``NotFoundError``)."""
    upload = session.get(Upload, upload_id)
    if upload is None or upload.kind != kind or not caller.sees(upload.team):
        raise NotFoundError(kind, upload_id)
    return upload

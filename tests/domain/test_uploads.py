"""Uploads: recorded under the team's quota with their file in place, or not at all; seen by
their team (and admins) only."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import NotFoundError, QuotaExceededError
from domain import uploads
from store.db import session_scope
from store.identity import Caller, create_team
from store.models import Upload

ANA = Caller(user="ana", team="vision", role="member", token_id="t1")
BO = Caller(user="bo", team="audio", role="member", token_id="t2")
ROOT = Caller(user="root", team="ops", role="admin", token_id="t0")


def staged(data_root: Path, kind: str, content: bytes) -> uploads.Staged:
    folder = uploads.folder(data_root, kind)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".upload.{len(list(folder.iterdir()))}"
    tmp.write_bytes(content)
    return uploads.Staged(tmp, len(content), "0" * 64)


def test_stored_filename_is_a_printable_label() -> None:
    assert uploads.stored_filename("a\x00b\nc.npz") == "abc.npz"
    assert uploads.stored_filename(None) == ""
    assert len(uploads.stored_filename("x" * 400)) == 300


def test_a_recorded_upload_has_its_file_in_place(db_url: str, tmp_path: Path) -> None:
    with session_scope(db_url) as session:
        create_team(session, "vision")
        upload = uploads.record(
            session, ANA, tmp_path, staged(tmp_path, "model", b"weights"),
            kind="model", fmt="torchscript", filename="t\x00.pt", details={"entries": 3},
        )  # fmt: skip
    assert upload.path == f"uploads/models/{upload.id}.pt" and upload.filename == "t.pt"
    assert (tmp_path / upload.path).read_bytes() == b"weights"
    assert (upload.owner, upload.team, upload.size) == ("ana", "vision", 7)
    assert [p.name for p in uploads.folder(tmp_path, "model").iterdir()] == [f"{upload.id}.pt"]


def test_over_the_quota_nothing_is_kept(db_url: str, tmp_path: Path) -> None:
    with session_scope(db_url) as session:
        create_team(session, "vision", max_storage_bytes=10)
    with session_scope(db_url) as session:
        file = staged(tmp_path, "dataset", b"x" * 11)
        with pytest.raises(QuotaExceededError) as refused:
            uploads.record(
                session, ANA, tmp_path, file, kind="dataset", fmt="npz", filename="d.npz", details={}
            )
        assert refused.value.type == "storage-quota-exceeded"
    assert file.tmp.exists()  # the caller's to remove; nothing moved under a final name
    assert [p.name for p in uploads.folder(tmp_path, "dataset").iterdir()] == [file.tmp.name]
    with session_scope(db_url) as session:
        assert session.query(Upload).count() == 0


def test_an_upload_is_seen_by_its_team_and_admins(db_url: str, tmp_path: Path) -> None:
    with session_scope(db_url) as session:
        for team in ("vision", "audio"):
            create_team(session, team)
        ids = {}
        for caller in (ANA, BO):
            file = staged(tmp_path, "dataset", caller.user.encode())
            ids[caller.user] = uploads.record(
                session, caller, tmp_path, file, kind="dataset", fmt="npz", filename="d.npz", details={}
            ).id
    with session_scope(db_url) as session:
        assert [u.id for u in uploads.list_visible(session, ANA, "dataset")] == [ids["ana"]]
        assert {u.id for u in uploads.list_visible(session, ROOT, "dataset")} == set(ids.values())
        assert uploads.list_visible(session, ANA, "model") == []
        assert uploads.get_visible(session, ANA, "dataset", ids["ana"]).owner == "ana"
        assert uploads.get_visible(session, ROOT, "dataset", ids["bo"]).owner == "bo"
        for kind, upload_id in (("dataset", ids["bo"]), ("model", ids["ana"]), ("dataset", "nope")):
            with pytest.raises(NotFoundError) as missing:
                uploads.get_visible(session, ANA, kind, upload_id)
            assert (missing.value.what, missing.value.ident) == (kind, upload_id)

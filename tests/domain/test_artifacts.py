"""Artifacts: seen through their job, read back against their checksum, gone when their file is."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from core.errors import GoneError, NotFoundError
from domain import artifacts
from store.artifacts import CHUNK, ChecksumError, LocalStore
from store.db import session_scope
from store.identity import Caller
from store.models import Artifact, Job, utcnow

ANA = Caller(user="ana", team="vision", role="member", token_id="t1")
BO = Caller(user="bo", team="audio", role="member", token_id="t2")


def stored(db_url: str, tmp_path: Path, data: bytes) -> tuple[LocalStore, str, str]:
    """A job of team vision with one artifact holding ``data``: (store, job id, artifact id)."""
    store = LocalStore(tmp_path / "artifacts")
    source = tmp_path / "student.pt"
    source.write_bytes(data)
    put = store.put("jobs/j/student.pt", source)
    with session_scope(db_url) as session:
        job = Job(name="j", spec={}, team="vision")
        session.add(job)
        session.flush()
        artifact = Artifact(
            job_id=job.id, name="student.torchscript", filename="student.pt",
            size=put.size, sha256=put.sha256, location=put.location,
        )  # fmt: skip
        session.add(artifact)
        session.flush()
        return store, job.id, artifact.id


def test_an_artifact_is_seen_through_its_job(db_url: str, tmp_path: Path) -> None:
    _, job_id, artifact_id = stored(db_url, tmp_path, b"weights")
    with session_scope(db_url) as session:
        assert [a.id for a in artifacts.of_job(session, job_id)] == [artifact_id]
        assert artifacts.get_visible(session, ANA, artifact_id).name == "student.torchscript"
        with pytest.raises(NotFoundError):
            artifacts.get_visible(session, BO, artifact_id)  # another team's
        session.get(Job, job_id).deleted_at = utcnow()  # type: ignore[union-attr]
        session.flush()
        with pytest.raises(NotFoundError):
            artifacts.get_visible(session, ANA, artifact_id)  # a deleted job's
        with pytest.raises(NotFoundError):
            artifacts.get_visible(session, ANA, "nope")


def test_read_checks_the_file_and_holds_back_the_last_chunk(db_url: str, tmp_path: Path) -> None:
    data = bytes(range(256)) * (CHUNK // 128)  # two chunks
    store, _, artifact_id = stored(db_url, tmp_path, data)
    with session_scope(db_url) as session:
        artifact = artifacts.get_visible(session, ANA, artifact_id)
    assert b"".join(artifacts.read(store, artifact)) == data
    assert artifact.sha256 == hashlib.sha256(data).hexdigest()

    path = tmp_path / "artifacts" / artifact.location.removeprefix("file:")
    path.write_bytes(data[:-1] + b"\x00")  # the same size, one byte changed
    chunks = artifacts.read(store, artifact)
    assert next(chunks) == data[:CHUNK]  # only once the second chunk was read
    with pytest.raises(ChecksumError):
        next(chunks)  # the last chunk never goes out

    path.unlink()
    with pytest.raises(GoneError, match="no longer in the store"):
        artifacts.read(store, artifact)

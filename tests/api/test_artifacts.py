"""Artifacts: listing, streamed downloads with checksum headers, corrupt and missing files."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from store.artifacts import CHUNK, ChecksumError, LocalStore
from store.db import session_scope
from store.models import Artifact
from store.settings import Settings
from tests.api.support import assert_problem, move, spec, unique


def finished_job(client: TestClient, settings: Settings) -> str:
    job_id = str(client.post("/v1/jobs", json=spec(name=unique())).json()["id"])
    move(settings.db_url, job_id, "starting", "running", "succeeded")
    return job_id


def add_artifact(settings: Settings, job_id: str, name: str, filename: str, data: bytes) -> tuple[str, Path]:
    source = Path(settings.home) / f"src-{name}"
    source.write_bytes(data)
    stored = LocalStore(Path(settings.artifacts_location)).put(f"jobs/{job_id}/{filename}", source)
    with session_scope(settings.db_url) as session:
        row = Artifact(
            job_id=job_id,
            name=name,
            filename=filename,
            size=stored.size,
            sha256=stored.sha256,
            location=stored.location,
        )
        session.add(row)
        session.flush()
        artifact_id = row.id
    return artifact_id, Path(settings.artifacts_location) / f"jobs/{job_id}/{filename}"


def test_list_and_download_with_checksums(client: TestClient, settings: Settings) -> None:
    job_id = finished_job(client, settings)
    data = os.urandom(CHUNK * 2 + 123)  # several chunks
    artifact_id, _ = add_artifact(settings, job_id, "student.onnx", "student.onnx", data)
    add_artifact(settings, job_id, "report", "report.json", b"{}")
    listed = client.get(f"/v1/jobs/{job_id}/artifacts").json()["items"]
    assert [a["name"] for a in listed] == ["report", "student.onnx"]
    onnx = listed[1]
    digest = hashlib.sha256(data).hexdigest()
    assert onnx["size"] == len(data) and onnx["sha256"] == digest
    assert onnx["url"] == f"/v1/artifacts/{artifact_id}" and onnx["filename"] == "student.onnx"

    response = client.get(onnx["url"])
    assert response.status_code == 200 and response.content == data
    assert response.headers["content-length"] == str(len(data))
    assert response.headers["etag"] == f'"{digest}"'
    assert response.headers["x-checksum-sha256"] == digest
    assert response.headers["digest"] == "sha-256=" + base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert response.headers["content-disposition"].startswith('attachment; filename="student.onnx"')
    cached = client.get(onnx["url"], headers={"If-None-Match": f'"{digest}"'})
    assert cached.status_code == 304 and cached.content == b""
    assert client.get(f"/v1/jobs/{job_id}/artifacts").json()["items"][0]["name"] == "report"
    assert_problem(client.get("/v1/artifacts/nope"), 404)


def test_corrupt_file_is_cut_short_and_missing_file_is_410(client: TestClient, settings: Settings) -> None:
    job_id = finished_job(client, settings)
    data = os.urandom(CHUNK + 10)
    artifact_id, path = add_artifact(settings, job_id, "student.pt", "student.pt", data)
    path.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])  # same size, the first byte differs
    received = bytearray()
    # the test client re-raises the server's error
    with pytest.raises(ChecksumError), client.stream("GET", f"/v1/artifacts/{artifact_id}") as response:
        assert response.status_code == 200
        for chunk in response.iter_bytes():
            received += chunk
    assert len(received) < len(data)  # the last chunk was held back: never the whole corrupt file

    path.unlink()
    assert_problem(client.get(f"/v1/artifacts/{artifact_id}"), 410)

"""The client against httpx's fake transport: the edge cases a live service rarely produces."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from client import (
    ApiError,
    Artifact,
    AuthError,
    ChecksumMismatch,
    Client,
    Conflict,
    Invalid,
    NotFound,
    Unreachable,
    Update,
    WaitTimeout,
)
from client._wait import wait  # the function behind Client.wait, with its clock and sleep

Handler = Callable[[httpx.Request], httpx.Response]
JOB = {"id": "j1", "name": "tiny", "status": "queued", "attempt": 0, "spec": {}, "future_field": [1]}


def fake(handler: Handler) -> Client:
    return Client("http://api.test/", "secret", transport=httpx.MockTransport(handler))


def problem(status: int, detail: str, **extra: Any) -> httpx.Response:
    body = {"type": "urn:distillery:problem:x", "title": "Title", "status": status, "detail": detail, **extra}
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


@pytest.mark.parametrize(
    ("status", "kind"),
    [(401, AuthError), (403, AuthError), (404, NotFound), (409, Conflict), (422, Invalid), (500, ApiError)],
)
def test_problem_documents_become_typed_errors(status: int, kind: type[ApiError]) -> None:
    errors = [{"field": "student.model.kind", "message": "unknown kind 'x'"}]
    api = fake(lambda request: problem(status, "what went wrong", errors=errors))
    with pytest.raises(kind) as caught:
        api.get_job("j1")
    error = caught.value
    assert type(error) is kind and error.status == status and error.message == "what went wrong"
    assert error.problem is not None and error.problem.title == "Title"
    assert [(e.field, e.message) for e in error.errors] == [("student.model.kind", "unknown kind 'x'")]


def test_an_error_without_a_problem_document_keeps_its_status_and_text() -> None:
    api = fake(lambda request: httpx.Response(502, text="<html>Bad Gateway</html>"))
    with pytest.raises(ApiError) as caught:
        api.pool()
    assert caught.value.status == 502 and caught.value.problem is None
    assert "502" in caught.value.message and "Bad Gateway" in caught.value.message


def test_requests_carry_the_token_and_unknown_fields_are_kept() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=JOB, headers={"ETag": '"3"'})

    job = fake(handler).get_job("j1")
    assert seen[0].headers["Authorization"] == "Bearer secret"
    assert str(seen[0].url) == "http://api.test/v1/jobs/j1"
    assert job.etag == '"3"' and job.model_extra == {"future_field": [1]} and not job.finished


def test_polling_with_an_etag_gets_none_while_unchanged() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("If-None-Match") == '"3"':
            return httpx.Response(304, headers={"ETag": '"3"'})
        return httpx.Response(200, json=JOB, headers={"ETag": '"3"'})

    api = fake(handler)
    first = api.job("j1")
    assert first is not None and api.job("j1", etag=first.etag) is None


def test_connection_failures_name_the_server() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    with pytest.raises(Unreachable) as caught:
        fake(refuse).me()
    assert "http://api.test" in caught.value.message and "refused" in caught.value.message

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out")

    with pytest.raises(Unreachable, match="no answer within"):
        fake(slow).me()


def test_submit_sends_yaml_text_as_json_with_an_idempotency_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json=JOB, headers={"Location": "/v1/jobs/j1"})

    job = fake(handler).submit("name: tiny\ndistill: {epochs: 2}\n", idempotency_key="k1")
    assert job.id == "j1"
    assert json.loads(seen[0].content) == {"name": "tiny", "distill": {"epochs": 2}}
    assert seen[0].headers["Idempotency-Key"] == "k1"
    assert seen[0].headers["content-type"] == "application/json"


@pytest.mark.parametrize("text", ["name: [unclosed\n", "- just\n- a list\n"])
def test_a_spec_that_is_not_a_mapping_is_refused_before_sending(text: str) -> None:
    api = fake(lambda request: pytest.fail("nothing should be sent"))
    with pytest.raises(Invalid) as caught:
        api.submit(text)
    assert caught.value.status == 422 and caught.value.errors[0].field == "body"


def test_iter_jobs_follows_the_cursor_and_all_metrics_follows_has_more() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        params = request.url.params
        if request.url.path == "/v1/jobs":
            assert params.get_list("status") == ["queued", "running"]
            if params.get("cursor") is None:
                return httpx.Response(200, json={"items": [JOB], "next_cursor": "c2"})
            return httpx.Response(200, json={"items": [{**JOB, "id": "j2"}], "next_cursor": None})
        after = int(params.get("after") or 0)
        row = {"id": after + 1, "stage": "student", "epoch": after + 1, "step": 1, "name": "val/top1"}
        more = after + 1 < 3
        return httpx.Response(200, json={"items": [row], "next_cursor": str(after + 1), "has_more": more})

    api = fake(handler)
    assert [j.id for j in api.iter_jobs(status=["queued", "running"])] == ["j1", "j2"]
    assert [m.epoch for m in api.all_metrics("j1")] == [1, 2, 3]


def artifact_for(content: bytes, sha256: str | None = None) -> Artifact:
    digest = sha256 or hashlib.sha256(content).hexdigest()
    return Artifact(
        id="a1",
        name="student_onnx",
        filename="sub/../student.onnx",
        size=len(content),
        sha256=digest,
        url="/v1/artifacts/a1",
    )


def serving(content: bytes) -> Client:
    return fake(lambda request: httpx.Response(200, content=content))


def test_download_checks_the_sha256_and_keeps_only_the_file_name(tmp_path: Path) -> None:
    content = b"onnx bytes" * 1000
    path = serving(content).download(artifact_for(content), tmp_path)
    assert path == tmp_path / "student.onnx" and path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student.onnx"]


def test_a_checksum_mismatch_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(ChecksumMismatch, match="not kept"):
        serving(b"tampered").download(artifact_for(b"x", sha256="0" * 64), tmp_path / "out.onnx")
    assert list(tmp_path.iterdir()) == []


class CutShort(httpx.SyncByteStream):
    def __iter__(self) -> Iterator[bytes]:
        yield b"first half"
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


def test_a_download_cut_short_leaves_no_file(tmp_path: Path) -> None:
    api = fake(lambda request: httpx.Response(200, stream=CutShort()))
    with pytest.raises(Unreachable, match="cut short"):
        api.download(artifact_for(b"whole file"), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_refused_download_raises_the_api_error(tmp_path: Path) -> None:
    api = fake(lambda request: problem(410, "the artifact's file is no longer in the store"))
    with pytest.raises(ApiError, match="no longer in the store"):
        api.download(artifact_for(b"x"), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_uploads_are_multipart_with_the_form_fields(tmp_path: Path) -> None:
    weights = tmp_path / "teacher.safetensors"
    weights.write_bytes(b"weights")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        request.read()
        body = {"id": "u1", "kind": "model", "path": "uploads/models/u1.safetensors", "spec_fragment": {}}
        return httpx.Response(201, json=body)

    upload = fake(handler).upload_model(weights, format="safetensors", architecture={"kind": "mlp"})
    assert upload.path == "uploads/models/u1.safetensors"
    body = seen[0].content.decode()
    assert seen[0].headers["content-type"].startswith("multipart/form-data")
    assert 'name="format"\r\n\r\nsafetensors' in body and '{"kind": "mlp"}' in body
    assert 'filename="teacher.safetensors"' in body and "weights" in body


def test_wait_polls_cheaply_and_reports_only_changes() -> None:
    """Version 1 (queued), then 304 twice, then version 2 (running), then 3 (succeeded)."""
    answers = iter([("1", "queued"), None, None, ("2", "running"), ("3", "succeeded")])
    metric_calls: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/metrics"):
            after = request.url.params.get("after")
            metric_calls.append(after)
            rows = [] if after else [{"id": 7, "stage": "student", "epoch": 1, "step": 1, "name": "val/top1"}]
            return httpx.Response(200, json={"items": rows, "next_cursor": "7", "has_more": False})
        answer = next(answers)
        if answer is None:
            assert request.headers["If-None-Match"] == '"1"'
            return httpx.Response(304)
        version, status = answer
        return httpx.Response(200, json={**JOB, "status": status}, headers={"ETag": f'"{version}"'})

    updates: list[Update] = []
    sleeps: list[float] = []
    job = wait(fake(handler), "j1", on_update=updates.append, interval=0.5, metrics=True, sleep=sleeps.append)
    assert job.status == "succeeded"
    assert [(u.job.status, u.changed, len(u.metrics)) for u in updates] == [
        ("queued", True, 1),
        ("running", True, 0),
        ("succeeded", True, 0),
    ]
    # a 304 means no new metrics either (they move the job's version): none fetched then
    assert metric_calls == [None, "7", "7"]
    assert sleeps == [0.5] * 4


def test_wait_gives_up_after_its_timeout() -> None:
    clock = iter([0.0, 0.5, 1.5, 2.5])
    api = fake(lambda request: httpx.Response(200, json=JOB, headers={"ETag": '"1"'}))
    with pytest.raises(WaitTimeout, match="still queued"):
        wait(api, "j1", timeout=2.0, sleep=lambda s: None, clock=lambda: next(clock))

"""Every error is application/problem+json naming what is wrong, and no bad input is a 5xx."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from api.app import create_app
from store.db import session_scope
from store.settings import Settings
from tests.api.conftest import FakeBroker, make_settings
from tests.api.support import ADMIN, assert_problem, spec

DATABASE_UNAVAILABLE = "urn:distillery:problem:database-unavailable"

BAD_SPECS: dict[str, tuple[Any, str, str]] = {
    "unknown dataset": ({"data": {"kind": "imagenet"}}, "data.kind", "'mnist1d'"),
    "unknown model": ({"student": {"model": {"kind": "vit"}}}, "student.model.kind", "'mlp'"),
    "torchscript student": (
        {"student": {"model": {"kind": "torchscript", "path": "a.pt"}}},
        "student.model.kind",
        "'cnn'",
    ),
    "unknown loss": (
        {"distill": {"losses": [{"kind": "kd"}, {"kind": "nope"}]}},
        "distill.losses.1.kind",
        "'dkd'",
    ),
    "missing kind": ({"distill": {"losses": [{"weight": 1}]}}, "distill.losses.0.kind", "kind"),
    "bad value in a union member": (
        {"distill": {"losses": [{"kind": "kd", "temperature": -1}]}},
        "distill.losses.0.temperature",
        "greater than 0",
    ),
    "wrong type": ({"seed": "zero"}, "seed", "integer"),
    "wrong nested type": (
        {"student": {"model": {"kind": "mlp", "hidden": "wide"}}},
        "student.model.hidden",
        "",
    ),
    "unknown field": ({"epochs": 3}, "epochs", "Extra inputs"),
    "bad literal": ({"resources": {"priority": "urgent"}}, "resources.priority", "'low', 'normal' or 'high'"),
    "bad name": ({"name": "has spaces"}, "name", "pattern"),
    "path escape": ({"data": {"kind": "npz", "path": "../etc/passwd"}}, "data.path", "relative path"),
    "cross-field": (
        {"distill": {"losses": [{"kind": "kd", "teacher": 4}]}},
        "distill.losses.0.teacher",
        "does not",
    ),
    "duplicate export": ({"export": ["onnx", "onnx"]}, "export", "listed twice"),
    "not an object": ([1, 2], "(spec)", "JSON object"),
    "wrong version": ({"spec_version": 2}, "spec_version", "1"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_spec_is_422_naming_the_field(client: TestClient, case: str) -> None:
    body, field, fragment = BAD_SPECS[case]
    problem = assert_problem(client.post("/v1/jobs", json=body), 422)
    assert problem["type"].endswith("invalid-spec") and problem["instance"] == "/v1/jobs"
    fields = {e["field"]: e["message"] for e in problem["errors"]}
    assert field in fields, fields
    assert fragment in fields[field]
    assert field in problem["detail"]


def test_malformed_json_unsupported_media_and_oversized_spec(client: TestClient) -> None:
    problem = assert_problem(
        client.post("/v1/jobs", content=b'{"name": ', headers={"content-type": "application/json"}), 422
    )
    assert problem["errors"][0]["field"] == "body" and "malformed JSON" in problem["errors"][0]["message"]
    assert_problem(
        client.post("/v1/jobs", content=b"\xff\xfe", headers={"content-type": "application/json"}), 422
    )
    assert_problem(client.post("/v1/jobs", content=b"name: x", headers={"content-type": "text/plain"}), 415)
    assert_problem(client.post("/v1/jobs", data={"name": "x"}), 415)
    huge = json.dumps({**spec(), "padding": "x" * (1 << 20)})
    problem = assert_problem(
        client.post("/v1/jobs", content=huge, headers={"content-type": "application/json"}), 413
    )
    assert "bytes" in problem["detail"]
    ok = client.post(
        "/v1/jobs", content=json.dumps(spec()), headers={"content-type": "application/json; charset=utf-8"}
    )
    assert ok.status_code == 202


def test_catch_all_is_a_500_problem(settings: Settings) -> None:
    app = create_app(settings, publish=lambda *_: None, run_dispatcher=False, check_broker=lambda: None)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    with TestClient(app, raise_server_exceptions=False) as client:
        problem = assert_problem(client.get("/boom"), 500)
    assert "secret" not in problem["detail"]


def test_no_bad_input_is_a_server_error(client: TestClient) -> None:
    job = client.post("/v1/jobs", json=spec()).json()["id"]
    json_ct = {"content-type": "application/json"}
    requests: list[tuple[str, str, dict[str, Any]]] = [
        *[("POST", "/v1/jobs", {"json": body}) for body, _field, _msg in BAD_SPECS.values()],
        ("POST", "/v1/jobs", {"content": b"{", "headers": json_ct}),
        ("POST", "/v1/jobs", {"content": b"", "headers": json_ct}),
        ("POST", "/v1/jobs", {"content": b"null", "headers": json_ct}),
        ("POST", "/v1/jobs", {"content": b'"spec"', "headers": json_ct}),
        ("POST", "/v1/jobs", {"content": b"1e999999", "headers": json_ct}),
        ("POST", "/v1/jobs", {"content": b"[" * 100_000, "headers": json_ct}),
        ("POST", "/v1/jobs", {"json": spec(), "headers": {"Idempotency-Key": "k" * 500}}),
        ("POST", "/v1/jobs", {"content": b"x"}),
        ("GET", "/v1/jobs", {"params": {"limit": -1}}),
        ("GET", "/v1/jobs", {"params": {"cursor": "eyJhIjogMX0"}}),  # base64 of valid JSON, wrong shape
        ("GET", "/v1/jobs", {"params": {"cursor": "!!!"}}),
        ("GET", "/v1/jobs", {"params": {"status": ["queued", "bogus"]}}),
        ("GET", "/v1/jobs/" + "x" * 1000, {}),
        ("GET", f"/v1/jobs/{job}", {"headers": {"If-None-Match": 'garbage, W/"1"'}}),
        ("GET", f"/v1/jobs/{job}/metrics", {"params": {"after": "-1"}}),
        ("GET", f"/v1/jobs/{job}/metrics", {"params": {"after": "9" * 40}}),
        ("GET", f"/v1/jobs/{job}/metrics", {"params": {"max_points": 0, "limit": 0}}),
        ("GET", f"/v1/jobs/{job}/events", {"params": {"format": "xml"}}),
        ("GET", f"/v1/jobs/{job}/events", {"headers": {"Last-Event-ID": "abc"}}),
        ("POST", f"/v1/jobs/{job}/cancel", {"json": {"unexpected": True}}),
        ("DELETE", f"/v1/jobs/{job}", {}),
        ("DELETE", "/v1/jobs/unknown", {}),
        ("GET", "/v1/artifacts/unknown", {}),
        ("POST", "/v1/models", {"files": {"file": ("a.pt", b"")}}),
        ("POST", "/v1/models", {"files": {"file": ("a.pt", b"PK\x03\x04garbage")}}),
        ("POST", "/v1/models", {"files": {"file": ("a", b"\x00" * 16)}, "data": {"architecture": "[]"}}),
        ("POST", "/v1/models", {"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data"}}),
        ("POST", "/v1/datasets", {"files": {"file": ("a.npz", b"PK\x05\x06" + b"\x00" * 18)}}),
        ("POST", "/v1/datasets", {"files": {"file": ("a.npz", b"\x93NUMPY garbage")}}),
        ("GET", "/v1/models/unknown", {}),
        ("GET", "/v1/nowhere", {}),
        ("PUT", "/v1/jobs", {}),
    ]
    accepted = []
    for method, path, kwargs in requests:
        response = client.request(method, path, **kwargs)
        assert response.status_code < 500, (method, path, kwargs.get("params"), response.text)
        if response.status_code >= 400:
            assert response.headers["content-type"].startswith("application/problem+json"), (method, path)
        else:
            accepted.append((method, path))
    # an odd If-None-Match is no match; cancel ignores a body; the cancelled job can then be deleted
    assert accepted == [
        ("GET", f"/v1/jobs/{job}"),
        ("POST", f"/v1/jobs/{job}/cancel"),
        ("DELETE", f"/v1/jobs/{job}"),
    ]


def test_an_unreachable_database_is_a_503_to_retry(tmp_path: Path, broker: FakeBroker) -> None:
    settings = make_settings(tmp_path, "postgresql+psycopg://nobody@127.0.0.1:1/none")
    app = create_app(settings, publish=broker.publish, run_dispatcher=False, check_broker=lambda: None)
    with TestClient(app, headers=ADMIN) as client:
        for method, path, body in (
            ("GET", "/v1/jobs", None),
            ("GET", "/v1/jobs/some-job", None),
            ("POST", "/v1/jobs", spec()),
        ):
            response = client.request(method, path, json=body)
            problem = assert_problem(response, 503)
            assert problem["type"] == DATABASE_UNAVAILABLE and problem["instance"] == path
            assert int(response.headers["Retry-After"]) > 0
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "Retry-After" in ready.headers
    assert broker.published == []


@pytest.mark.parametrize("error", [PoolTimeoutError("pool exhausted"), DisconnectionError("gone")])
def test_pool_timeouts_and_disconnections_are_503(settings: Settings, error: Exception) -> None:
    app = create_app(settings, publish=lambda *_: None, run_dispatcher=False, check_broker=lambda: None)

    @app.get("/busy")
    def busy() -> None:
        raise error

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/busy")
    assert assert_problem(response, 503)["type"] == DATABASE_UNAVAILABLE
    assert "Retry-After" in response.headers


def test_a_database_bug_stays_a_logged_500(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(settings, publish=lambda *_: None, run_dispatcher=False, check_broker=lambda: None)

    @app.get("/bug")
    def bug() -> None:  # PostgreSQL: ProgrammingError; SQLite: OperationalError("no such table")
        with session_scope(settings.db_url) as session:
            session.execute(text("SELECT * FROM no_such_table"))

    with TestClient(app, raise_server_exceptions=False) as client, caplog.at_level(logging.ERROR):
        response = client.get("/bug")
    problem = assert_problem(response, 500)
    assert problem["type"] != DATABASE_UNAVAILABLE and "Retry-After" not in response.headers
    assert any("unhandled error on GET /bug" in r.getMessage() for r in caplog.records)


def test_a_client_gone_before_its_body_ended_stores_nothing_and_logs_no_error(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Under load a client's timeout can close the connection mid-body: the service answers into
    the void, stores nothing, and logs it as what it is, not as an unhandled error."""
    import anyio

    from tests.api.support import new_member

    member = new_member(settings.db_url)
    app = create_app(settings, publish=lambda *_: None, run_dispatcher=False, check_broker=lambda: None)
    body = json.dumps(spec(name="cut-short")).encode()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/jobs", "raw_path": b"/v1/jobs", "query_string": b"",
        "root_path": "", "server": ("test", 80), "client": ("test", 1),
        "headers": [
            (b"host", b"test"), (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"authorization", member.headers["Authorization"].encode()),
        ],
    }  # fmt: skip
    incoming = [
        {"type": "http.request", "body": body[:10], "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with caplog.at_level(logging.INFO):
        anyio.run(app, scope, receive, send)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 400
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    with session_scope(settings.db_url) as session:
        stored = session.scalar(text("SELECT count(*) FROM jobs WHERE name = 'cut-short'"))
    assert stored == 0

"""Odd inputs, on SQLite and PostgreSQL alike: each is a 4xx naming the problem, never a 5xx.

Spec bodies (tags, numbers, NUL characters, nesting, size), cursors, limits, NULs in the URL,
team limits and names; every datetime the API returns carries its time zone; the pool shows
another team's job without its content.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi.testclient import TestClient

import api.documents
from api.app import create_app
from store.db import session_scope
from store.models import Artifact, Upload, new_id, utcnow
from store.pool import heartbeat
from tests.api.conftest import FakeBroker, make_settings
from tests.api.support import ADMIN, Member, assert_problem, move, new_member, spec, unique

YAML = {"content-type": "application/yaml"}
VALIDATE = "/v1/spec/validate"


def fields(problem: dict[str, Any]) -> dict[str, str]:
    return {e["field"]: e["message"] for e in problem["errors"]}


# ------------------------------------------------------------------ spec bodies


@pytest.mark.parametrize(
    ("value", "tag"),
    [
        ("!!binary aGVsbG8=", "!!binary"),
        ("!!set {a, b}", "!!set"),
        ("!!omap [{a: 1}]", "!!omap"),
        ("!!timestamp 2024-01-01", "!!timestamp"),
        ("!!python/object:os.system ls", "!!python/object:os.system"),
        ("!!python/name:os.system ''", "!!python/name:os.system"),
        ("!secret x", "!secret"),
    ],
)
def test_yaml_tags_beyond_plain_data_are_refused_by_name(client: TestClient, value: str, tag: str) -> None:
    problem = assert_problem(client.post(VALIDATE, content=f"name: {value}\n", headers=YAML), 422)
    assert tag in fields(problem)["body"]


def test_an_unquoted_date_is_a_string_not_a_timestamp(client: TestClient) -> None:
    problem = assert_problem(client.post(VALIDATE, content="name: 2024-01-01\nseed: x\n", headers=YAML), 422)
    assert "name" not in fields(problem) and "seed" in fields(problem)


@pytest.mark.parametrize(
    ("body", "headers", "field"),
    [
        ('{"distill": {"optimizer": {"kind": "adam", "lr": NaN}}}', {}, "distill.optimizer.lr"),
        ('{"distill": {"losses": [{"kind": "kd", "temperature": Infinity}]}}', {}, "distill.losses.0.temperature"),  # noqa: E501
        ('{"seed": -Infinity}', {}, "seed"),
        ('{"seed": 1e999}', {}, "seed"),
        ("seed: .nan\n", YAML, "seed"),
        ("distill:\n  optimizer: {kind: adam, lr: -.inf}\n", YAML, "distill.optimizer.lr"),
    ],
)  # fmt: skip
def test_nan_and_infinities_are_refused_naming_the_field(
    client: TestClient, body: str, headers: dict[str, str], field: str
) -> None:
    headers = headers or {"content-type": "application/json"}
    problem = assert_problem(client.post(VALIDATE, content=body, headers=headers), 422)
    assert "NaN" in fields(problem)[field]


def test_nul_characters_are_refused_naming_the_field(client: TestClient) -> None:
    for body in (spec(name="a\x00b"), spec(student={"model": {"kind": "mlp\x00"}})):
        for route in (VALIDATE, "/v1/jobs"):
            problem = assert_problem(client.post(route, json=body), 422)
            assert any("NUL" in message for message in fields(problem).values()), problem
    problem = assert_problem(client.post("/v1/jobs", json={**spec(), "k\x00": 1}), 422)
    assert "NUL" in fields(problem)["body"]
    yaml_nul = assert_problem(client.post(VALIDATE, content='name: "a\\0b"\n', headers=YAML), 422)
    assert "NUL" in fields(yaml_nul)["name"]


def test_integers_past_64_bits_are_refused_naming_the_field(client: TestClient) -> None:
    for text in (str(1 << 63), str(-(1 << 63) - 1), "9" * 5000):
        problem = assert_problem(
            client.post(
                "/v1/jobs", content=f'{{"seed": {text}}}', headers={"content-type": "application/json"}
            ),
            422,
        )
        assert "64 bits" in fields(problem)["seed"]
        problem = assert_problem(client.post(VALIDATE, content=f"seed: {text}\n", headers=YAML), 422)
        assert "64 bits" in fields(problem)["seed"]


@pytest.mark.parametrize("depth", [65, 100_000])
def test_deep_nesting_is_a_422_for_json_and_yaml(client: TestClient, depth: int) -> None:
    for text, headers in (
        ("[" * depth + "]" * depth, {"content-type": "application/json"}),
        ("[" * depth + "]" * depth, YAML),
        ('{"a":' * depth + "1" + "}" * depth, {"content-type": "application/json"}),
    ):
        problem = assert_problem(client.post(VALIDATE, content=text, headers=headers), 422)
        assert "nested deeper than 64" in fields(problem)["body"]


@pytest.fixture
def small_spec_client(db_url: str, tmp_path: Path, member: Member) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, db_url, max_spec_bytes=2000)
    app = create_app(settings, publish=FakeBroker().publish, run_dispatcher=False, check_broker=lambda: None)
    with TestClient(app, headers=member.headers) as test_client:
        yield test_client


def test_a_spec_past_the_size_setting_is_a_413_however_it_is_sent(small_spec_client: TestClient) -> None:
    big = json.dumps(spec(name=unique("big"), seed=1) | {"pad": "x" * 3000}).encode()

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it streams in
        for i in range(0, len(big), 500):
            yield big[i : i + 500]

    json_type = {"content-type": "application/json"}
    assert_problem(small_spec_client.post("/v1/jobs", content=big, headers=json_type), 413)
    assert_problem(small_spec_client.post("/v1/jobs", content=chunked(), headers=json_type), 413)
    small = json.dumps(spec(name=unique("small"))).encode()
    assert small_spec_client.post("/v1/jobs", content=small, headers=json_type).status_code == 202


def test_a_slow_parse_does_not_hold_up_other_requests(
    settings: Any, member: Member, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parse runs in a worker thread: while one is stuck, /healthz still answers."""
    started, release = threading.Event(), threading.Event()
    released: list[bool] = []
    real = api.documents.parse_yaml

    def slow_parse(raw: bytes) -> Any:
        started.set()
        # on the event loop this wait would hold /healthz back until it timed out
        released.append(release.wait(10))
        return real(raw)

    monkeypatch.setattr(api.documents, "parse_yaml", slow_parse)
    app = create_app(settings, publish=FakeBroker().publish, run_dispatcher=False, check_broker=lambda: None)

    async def scenario() -> tuple[int, int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers=member.headers
        ) as http:
            async with anyio.create_task_group() as group:
                answers: dict[str, int] = {}

                async def submit() -> None:
                    r = await http.post(VALIDATE, content="name: slow\n", headers=YAML)
                    answers["validate"] = r.status_code

                group.start_soon(submit)
                await anyio.to_thread.run_sync(started.wait, 10)
                health = await http.get("/healthz")
                release.set()
            return health.status_code, answers["validate"]

    health, validate = anyio.run(scenario)
    assert health == 200 and validate == 200 and released == [True]


# ------------------------------------------------------------------ cursors, limits, the URL

BAD_ROW_CURSORS = ["²", "١٢", "-1", "1.5", "abc", str(1 << 63), "9" * 19, "9" * 40, " 1"]


def _job(client: TestClient) -> str:
    response = client.post("/v1/jobs", json=spec(name=unique("in")))
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def test_row_cursors_out_of_range_are_422_naming_the_parameter(client: TestClient) -> None:
    job_id = _job(client)
    for cursor in BAD_ROW_CURSORS:
        for path in (f"/v1/jobs/{job_id}/metrics", f"/v1/jobs/{job_id}/events?format=json"):
            problem = assert_problem(client.get(path, params={"after": cursor}), 422)
            assert fields(problem) == {"after": "not a cursor this API returned"}, (path, cursor)
        header = {"Last-Event-ID": cursor.encode()}  # raw UTF-8 bytes on the wire
        events = client.get(f"/v1/jobs/{job_id}/events?format=json", headers=header)
        assert fields(assert_problem(events, 422)) == {"Last-Event-ID": "not a cursor this API returned"}
        audit = client.get("/v1/audit", params={"after": cursor}, headers=ADMIN)
        assert fields(assert_problem(audit, 422)) == {"after": "not a cursor this API returned"}
    top = str((1 << 63) - 1)  # the largest id a BIGINT holds is a fine cursor: nothing after it
    assert client.get(f"/v1/jobs/{job_id}/metrics", params={"after": top}).json()["items"] == []


def _cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def test_tampered_job_cursors_are_422(client: TestClient) -> None:
    _job(client)
    for cursor in (
        "!!!",
        _cursor(5),
        _cursor(["2024-01-01T00:00:00+00:00", "a\x00b"]),
        _cursor(["2024-01-01T00:00:00+00:00", "x" * 200]),
        _cursor(["2024-01-01T00:00:00", "abc"]),
        _cursor(["0001-01-01T00:00:00+23:59", "abc"]),
        _cursor([1, "abc"]),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ):
        problem = assert_problem(client.get("/v1/jobs", params={"cursor": cursor}), 422)
        assert fields(problem) == {"cursor": "not a cursor this API returned"}, cursor
    # an offset PostgreSQL would refuse (past 15:59) is read in UTC
    late = _cursor(["2999-01-01T00:00:00+23:59", "f" * 32])
    assert client.get("/v1/jobs", params={"cursor": late}).status_code == 200


def test_limits_out_of_range_are_422(client: TestClient) -> None:
    job_id = _job(client)
    for path in ("/v1/jobs", f"/v1/jobs/{job_id}/metrics", f"/v1/jobs/{job_id}/events?format=json"):
        for limit in ("0", "-1", str(1 << 64), "1e3", "x"):
            problem = assert_problem(client.get(path, params={"limit": limit}), 422)
            assert "query.limit" in fields(problem), (path, limit)


@pytest.mark.parametrize(
    "url",
    [
        "/v1/jobs?name=a%00b",
        "/v1/jobs?owner=%00",
        "/v1/jobs?team=x%00",
        "/v1/users?team=%00",
        "/v1/tokens?user=%00",
        "/v1/audit?actor=%00",
        "/v1/jobs/{job}/metrics?stage=a%00&name=b",
        "/v1/jobs/{job}/metrics?name=%00",
    ],
)
def test_a_nul_in_a_query_is_422_naming_the_parameter(client: TestClient, url: str) -> None:
    name = url.split("?")[1].split("=")[0]
    problem = assert_problem(client.get(url.format(job=_job(client)), headers=ADMIN), 422)
    assert "NUL" in fields(problem)[f"query.{name}"]


@pytest.mark.parametrize(
    "path", ["/v1/jobs/a%00b", "/v1/teams/a%00", "/v1/artifacts/%00", "/v1/models/%00", "/v1/datasets/x%00"]
)
def test_a_nul_in_a_path_is_422(client: TestClient, path: str) -> None:
    assert "NUL" in fields(assert_problem(client.get(path, headers=ADMIN), 422))["path"]


# ------------------------------------------------------------------ teams, users, tokens

INT32 = (1 << 31) - 1
INT64 = (1 << 63) - 1


def test_team_limits_are_bounded_by_their_columns(client: TestClient) -> None:
    name = unique("limits")
    top = {"max_running": INT32, "max_queued": INT32, "max_storage_bytes": INT64}
    made = client.post("/v1/teams", json={"name": name, **top}, headers=ADMIN)
    assert made.status_code == 201, made.text
    assert {k: made.json()[k] for k in top} == top  # stored and read back whole, on both databases
    for field, value in (
        ("max_running", INT32 + 1),
        ("max_queued", 1 << 40),
        ("max_storage_bytes", INT64 + 1),
    ):
        for method, url, body in (
            ("POST", "/v1/teams", {"name": unique("t"), field: value}),
            ("PATCH", f"/v1/teams/{name}", {field: value}),
        ):
            problem = assert_problem(client.request(method, url, json=body, headers=ADMIN), 422)
            assert f"body.{field}" in fields(problem), (method, field)
    assert_problem(client.patch(f"/v1/teams/{name}", json={"max_running": -1}, headers=ADMIN), 422)


@pytest.mark.parametrize("name", ["", " x", "a b", "a/b", "x" * 101, "a\x00", "é", "-lead"])
def test_user_and_team_names_are_checked(client: TestClient, name: str) -> None:
    team = assert_problem(client.post("/v1/teams", json={"name": name}, headers=ADMIN), 422)
    assert "body.name" in fields(team)
    user = client.post("/v1/users", json={"name": name, "team": "x"}, headers=ADMIN)
    assert "body.name" in fields(assert_problem(user, 422))
    for body in ({"name": unique("u"), "team": name}, {"user": name}):
        url = "/v1/users" if "name" in body else "/v1/tokens"
        assert_problem(client.post(url, json=body, headers=ADMIN), 422)


def test_a_token_label_is_text_without_nul(client: TestClient, member: Member) -> None:
    problem = assert_problem(
        client.post("/v1/tokens", json={"user": member.user, "label": "a\x00"}, headers=ADMIN), 422
    )
    assert "NUL" in fields(problem)["body.label"]
    ok = client.post("/v1/tokens", json={"user": member.user, "label": "laptop ✓"}, headers=ADMIN)
    assert ok.status_code == 201 and ok.json()["label"] == "laptop ✓"


def test_upload_form_fields_are_checked(client: TestClient) -> None:
    files = {"file": ("m.bin", b"\x00" * 16)}
    problem = assert_problem(client.post("/v1/models", files=files, data={"format": "pickle"}), 422)
    assert "body.format" in fields(problem)
    arch = {"format": "safetensors", "architecture": '{"kind": "mlp", "hidden": [NaN]}'}
    assert_problem(client.post("/v1/models", files=files, data=arch), 422)


# ------------------------------------------------------------------ what the API returns


def _datetimes(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            if (key == "at" or key.endswith("_at")) and isinstance(item, str):
                yield f"{path}.{key}", item
            else:
                yield from _datetimes(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _datetimes(item, f"{path}.{i}")


def test_every_datetime_returned_carries_its_time_zone(
    client: TestClient, db_url: str, member: Member
) -> None:
    job_id = _job(client)
    worker = unique("w")
    move(db_url, job_id, "starting", "running", set_lease=(f"{worker}:1",), started_at=utcnow())
    with session_scope(db_url) as session:
        session.add(
            Artifact(job_id=job_id, name="a", filename="a.bin", size=1, sha256="0" * 64, location="x")
        )
        upload = Upload(id=new_id(), kind="model", format="safetensors", filename="m", size=1)
        upload.path, upload.sha256, upload.details = f"uploads/models/{upload.id}", "0" * 64, {}
        upload.owner, upload.team = member.user, member.team
        session.add(upload)
        heartbeat(session, worker, host="h", gpu_type="any", devices=[])
    urls = [
        "/v1/jobs", f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/events?format=json",
        f"/v1/jobs/{job_id}/artifacts", "/v1/models", "/v1/pool", "/v1/teams", f"/v1/teams/{member.team}",
        "/v1/users", "/v1/tokens", "/v1/audit",
    ]  # fmt: skip
    seen = 0
    for url in urls:
        response = client.get(url, headers=ADMIN)
        assert response.status_code == 200, (url, response.text)
        for where, value in _datetimes(response.json()):
            seen += 1
            assert value.endswith(("Z", "+00:00")), (url, where, value)
    made = client.post("/v1/tokens", json={"user": member.user}, headers=ADMIN).json()
    assert made["created_at"].endswith(("Z", "+00:00"))
    assert seen >= 20


def test_the_pool_shows_another_team_s_job_without_its_content(client: TestClient, db_url: str) -> None:
    other = new_member(db_url)
    secret = unique("secret-project")
    answer = client.post("/v1/jobs", json=spec(name=secret), headers=other.headers)
    job_id = answer.json()["id"]
    worker = unique("w")
    progress = {"stage": "student", "fraction": 0.5, "eta_s": 10.0, "epoch": 3, "epochs": 9, "note": secret}
    move(db_url, job_id, "starting", "running", set_lease=(f"{worker}:1",), progress=progress)
    with session_scope(db_url) as session:
        heartbeat(session, worker, host="h", gpu_type="any", devices=[])
    pool = client.get("/v1/pool")
    assert pool.status_code == 200 and secret not in pool.text and job_id not in pool.text
    brief = next(w["job"] for w in pool.json()["workers"] if w["id"] == worker)
    assert brief == {
        "id": None, "name": None, "owner": None, "team": other.team, "status": "running",
        "progress": {"stage": "student", "fraction": 0.5, "eta_s": 10.0}, "gpus": 1, "devices": None,
    }  # fmt: skip
    own = client.get("/v1/pool", headers=other.headers).json()
    mine = next(w["job"] for w in own["workers"] if w["id"] == worker)
    assert mine["name"] == secret and mine["progress"] == progress


def test_an_upload_named_with_control_characters_is_stored_under_a_clean_label(client: TestClient) -> None:
    from tests.api.npz_cases import npz_bytes

    # written by hand: httpx would percent-encode the name
    body = (
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="a\x00b\x1bc.npz"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + npz_bytes() + b"\r\n--B--\r\n"
    )
    answer = client.post(
        "/v1/datasets", content=body, headers={"content-type": "multipart/form-data; boundary=B"}
    )
    assert answer.status_code == 201, answer.text  # a 500 on PostgreSQL when the NUL reached it
    assert answer.json()["filename"] == "abc.npz"

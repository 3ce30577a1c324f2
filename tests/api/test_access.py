"""Identities, roles, team isolation on every route, quotas, rate limits and the audit trail,
against SQLite and PostgreSQL (rate limits counted in Redis)."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from store.artifacts import LocalStore
from store.db import session_scope
from store.models import ApiToken, Artifact, Job, Metric
from store.pool import heartbeat
from store.settings import Settings
from tests.api.conftest import FakeBroker, make_settings
from tests.api.npz_cases import npz_bytes
from tests.api.support import ADMIN, Member, assert_problem, move, new_member, spec, unique
from tests.databases import statements

REDIS = "redis://127.0.0.1:6379/13"


@pytest.fixture
def app(settings: Settings, broker: FakeBroker) -> Any:
    return create_app(settings, publish=broker.publish, run_dispatcher=False, check_broker=lambda: None)


@pytest.fixture
def http(app: Any) -> Iterator[TestClient]:
    """The API with no token: each request says who it is."""
    with TestClient(app) as client:
        yield client


def finished_job_with_artifact(http: TestClient, settings: Settings, owner: Member, tmp_path: Path) -> dict:
    job = http.post("/v1/jobs", json=spec(name=unique()), headers=owner.headers).json()
    move(settings.db_url, job["id"], "starting", "running", "succeeded")
    source = tmp_path / f"{job['id']}.pt"
    source.write_bytes(b"weights of " + job["id"].encode())
    stored = LocalStore(Path(settings.artifacts_location)).put(f"jobs/{job['id']}/student.pt", source)
    with session_scope(settings.db_url) as session:
        artifact = Artifact(
            job_id=job["id"], name="student.torchscript", filename="student.pt",
            size=stored.size, sha256=stored.sha256, location=stored.location,
        )  # fmt: skip
        session.add(artifact)
        session.add(Metric(job_id=job["id"], stage="student", epoch=0, step=0, name="loss", value=1.0))
        session.flush()
        job["artifact_id"] = artifact.id
    return job


# ---------------------------------------------------------------- tokens


def test_every_v1_route_needs_a_token_and_health_does_not(http: TestClient, app: Any) -> None:
    routes = [(p, m.upper()) for p, ops in app.openapi()["paths"].items() if p.startswith("/v1") for m in ops]
    assert len(routes) >= 25
    for template, method in routes:
        path = template.replace("{", "").replace("}", "")  # any value: the token is checked first
        if True:
            for headers in ({}, {"Authorization": "Bearer dst_not-a-token"}, {"Authorization": "Basic eDp5"}):
                response = http.request(method, path, headers=headers)
                problem = assert_problem(response, 401)
                assert response.headers["www-authenticate"] == "Bearer", (method, path)
                assert "token" in problem["detail"] or "Bearer" in problem["detail"]
    for path in ("/healthz", "/metrics"):
        assert http.get(path).status_code == 200


def test_admin_manages_teams_users_and_tokens(http: TestClient, settings: Settings) -> None:
    team = unique("team")
    made = http.post("/v1/teams", json={"name": team, "max_running": 2}, headers=ADMIN)
    assert made.status_code == 201 and made.headers["location"] == f"/v1/teams/{team}"
    assert made.json() | {"created_at": None} == {
        "name": team, "max_running": 2, "max_queued": 100, "max_storage_bytes": None,
        "usage": {"queued": 0, "running": 0, "storage_bytes": 0, "slots": 0}, "created_at": None,
    }  # fmt: skip
    assert_problem(http.post("/v1/teams", json={"name": team}, headers=ADMIN), 409)
    bad = assert_problem(
        http.post("/v1/teams", json={"name": "no spaces", "max_queued": -1}, headers=ADMIN), 422
    )
    assert {e["field"] for e in bad["errors"]} == {"body.name", "body.max_queued"}

    user = unique("user")
    assert http.post("/v1/users", json={"name": user, "team": team}, headers=ADMIN).json()["role"] == "member"
    assert_problem(http.post("/v1/users", json={"name": user, "team": team}, headers=ADMIN), 409)
    missing = assert_problem(
        http.post("/v1/users", json={"name": unique(), "team": "nope"}, headers=ADMIN), 422
    )
    assert missing["errors"] == [{"field": "team", "message": "no such team"}]
    role = assert_problem(
        http.post("/v1/users", json={"name": unique(), "team": team, "role": "root"}, headers=ADMIN), 422
    )
    assert role["errors"][0]["field"] == "body.role"

    token = http.post("/v1/tokens", json={"user": user, "label": "laptop"}, headers=ADMIN)
    assert token.status_code == 201
    secret, token_id = token.json()["token"], token.json()["id"]
    assert secret.startswith("dst_") and len(secret) > 40
    assert_problem(http.post("/v1/tokens", json={"user": "nobody"}, headers=ADMIN), 422)
    me = http.get("/v1/me", headers={"Authorization": f"Bearer {secret}"}).json()
    assert me == {"user": user, "team": team, "role": "member", "token_id": token_id}
    # only the hash is stored, and listing never shows a secret
    with session_scope(settings.db_url) as session:
        stored = session.get(ApiToken, token_id)
        assert stored is not None and secret not in stored.token_hash and len(stored.token_hash) == 64
    listed = http.get("/v1/tokens", params={"user": user}, headers=ADMIN).json()["items"]
    assert [(t["id"], t["label"], "token" in t) for t in listed] == [(token_id, "laptop", False)]

    changed = http.patch(f"/v1/teams/{team}", json={"max_running": None, "max_queued": 5}, headers=ADMIN)
    assert changed.json()["max_running"] is None and changed.json()["max_queued"] == 5
    assert_problem(http.patch("/v1/teams/nope", json={}, headers=ADMIN), 404)


def test_a_revoked_token_is_refused_at_once(http: TestClient, db_url: str) -> None:
    member = new_member(db_url)
    assert http.get("/v1/jobs", headers=member.headers).status_code == 200
    assert http.delete(f"/v1/tokens/{member.token_id}", headers=ADMIN).status_code == 204
    problem = assert_problem(http.get("/v1/jobs", headers=member.headers), 401)
    assert "revoked" in problem["detail"]
    assert http.delete(f"/v1/tokens/{member.token_id}", headers=ADMIN).status_code == 204  # idempotent
    assert_problem(http.delete("/v1/tokens/nope", headers=ADMIN), 404)
    # the user's other tokens still work
    with session_scope(db_url) as session:
        from store.identity import create_token

        _, other = create_token(session, member.user)
    assert http.get("/v1/jobs", headers={"Authorization": f"Bearer {other}"}).status_code == 200


def test_only_admins_manage_access(http: TestClient, db_url: str) -> None:
    for role in ("member", "viewer"):
        someone = new_member(db_url, role=role)
        for method, path, body in (
            ("POST", "/v1/teams", {"name": unique()}),
            ("PATCH", f"/v1/teams/{someone.team}", {"max_running": 100}),
            ("POST", "/v1/users", {"name": unique(), "team": someone.team, "role": "admin"}),
            ("GET", "/v1/users", None),
            ("POST", "/v1/tokens", {"user": someone.user}),
            ("GET", "/v1/tokens", None),
            ("DELETE", f"/v1/tokens/{someone.token_id}", None),
        ):
            assert_problem(http.request(method, path, json=body, headers=someone.headers), 403)
        # but they see their own team, its limits and usage
        teams = http.get("/v1/teams", headers=someone.headers).json()["items"]
        assert [t["name"] for t in teams] == [someone.team]


# ---------------------------------------------------------------- isolation and roles


def test_two_teams_are_isolated_on_every_route(
    http: TestClient, settings: Settings, db_url: str, tmp_path: Path
) -> None:
    a, b = new_member(db_url), new_member(db_url)
    job = finished_job_with_artifact(http, settings, a, tmp_path)
    live = http.post("/v1/jobs", json=spec(name=unique()), headers=a.headers).json()
    dataset = http.post("/v1/datasets", files={"file": ("d.npz", npz_bytes())}, headers=a.headers).json()
    jid, aid = job["id"], job["artifact_id"]

    # team A sees all of it
    for path in (f"/v1/jobs/{jid}", f"/v1/jobs/{jid}/metrics", f"/v1/jobs/{jid}/artifacts",
                 f"/v1/artifacts/{aid}", f"/v1/datasets/{dataset['id']}"):  # fmt: skip
        assert http.get(path, headers=a.headers).status_code == 200, path
    assert http.get(f"/v1/jobs/{jid}/events", params={"format": "json"}, headers=a.headers).status_code == 200

    # team B: every route answers as if none of it existed
    for method, path in (
        ("GET", f"/v1/jobs/{jid}"),
        ("GET", f"/v1/jobs/{jid}/metrics"),
        ("GET", f"/v1/jobs/{jid}/events?format=json"),
        ("GET", f"/v1/jobs/{jid}/events"),
        ("GET", f"/v1/jobs/{jid}/artifacts"),
        ("GET", f"/v1/artifacts/{aid}"),
        ("POST", f"/v1/jobs/{live['id']}/cancel"),
        ("DELETE", f"/v1/jobs/{jid}"),
        ("GET", f"/v1/datasets/{dataset['id']}"),
    ):
        problem = assert_problem(http.request(method, path, headers=b.headers), 404)
        assert "does not exist" in problem["detail"], path
    listed = http.get("/v1/jobs", params={"limit": 200}, headers=b.headers).json()["items"]
    assert listed == []  # B has submitted nothing
    assert http.get("/v1/jobs", params={"team": a.team}, headers=b.headers).json()["items"] == []
    assert http.get("/v1/datasets", headers=b.headers).json()["items"] == []
    assert http.get("/v1/audit", headers=b.headers).json()["items"] == []
    assert_problem(http.get(f"/v1/teams/{a.team}", headers=b.headers), 404)
    # B's spec cannot name A's upload, even knowing its path
    naming = spec(data={"kind": "npz", "path": dataset["path"]})
    problem = assert_problem(http.post("/v1/jobs", json=naming, headers=b.headers), 422)
    assert problem["errors"][0]["field"] == "data.path"
    assert http.post("/v1/jobs", json=naming, headers=a.headers).status_code == 202

    # nothing B did changed A's jobs
    assert http.get(f"/v1/jobs/{live['id']}", headers=a.headers).json()["status"] == "queued"
    assert http.get(f"/v1/artifacts/{aid}", headers=a.headers).content.startswith(b"weights of")
    # an admin sees every team's jobs
    assert http.get(f"/v1/jobs/{jid}", headers=ADMIN).status_code == 200
    everyone = {j["id"] for j in http.get("/v1/jobs", params={"limit": 200}, headers=ADMIN).json()["items"]}
    assert {jid, live["id"]} <= everyone


def test_the_pool_hides_other_teams_jobs(http: TestClient, settings: Settings, db_url: str) -> None:
    a, b = new_member(db_url), new_member(db_url)
    job = http.post("/v1/jobs", json=spec(name=unique()), headers=a.headers).json()
    worker = unique("worker")
    move(settings.db_url, job["id"], "starting", set_lease=(f"{worker}:1",))
    move(settings.db_url, job["id"], "running")
    with session_scope(db_url) as session:
        heartbeat(session, worker, host="box", gpu_type="t4", devices=[{"name": "T4"}])

    def seen_by(member: Member) -> dict:
        workers = http.get("/v1/pool", headers=member.headers).json()["workers"]
        return next(w["job"] for w in workers if w["id"] == worker)

    assert seen_by(a)["id"] == job["id"] and seen_by(a)["name"] == job["name"]
    assert seen_by(b) == {"id": None, "name": None, "owner": None, "team": a.team, "status": "running",
                          "progress": None, "gpus": 1, "devices": None}  # fmt: skip


def test_viewers_read_but_do_not_change(http: TestClient, settings: Settings, db_url: str) -> None:
    member = new_member(db_url)
    viewer = new_member(db_url, team=member.team, role="viewer")
    job = http.post("/v1/jobs", json=spec(name=unique()), headers=member.headers).json()
    assert http.get(f"/v1/jobs/{job['id']}", headers=viewer.headers).status_code == 200
    assert [j["id"] for j in http.get("/v1/jobs", headers=viewer.headers).json()["items"]] == [job["id"]]
    for method, path, kwargs in (
        ("POST", "/v1/jobs", {"json": spec()}),
        ("POST", f"/v1/jobs/{job['id']}/cancel", {}),
        ("DELETE", f"/v1/jobs/{job['id']}", {}),
        ("POST", "/v1/datasets", {"files": {"file": ("d.npz", npz_bytes())}}),
        ("POST", "/v1/models", {"files": {"file": ("m.pt", b"x")}}),
    ):
        problem = assert_problem(http.request(method, path, headers=viewer.headers, **kwargs), 403)
        assert "viewer" in problem["detail"]
    assert http.get(f"/v1/jobs/{job['id']}", headers=member.headers).json()["status"] == "queued"


def test_cancel_and_delete_are_audited_with_their_actor(
    http: TestClient, settings: Settings, db_url: str
) -> None:
    alice = new_member(db_url)
    bob = new_member(db_url, team=alice.team)
    job = http.post("/v1/jobs", json=spec(name=unique()), headers=alice.headers).json()
    assert http.post(f"/v1/jobs/{job['id']}/cancel", headers=bob.headers).json()["status"] == "cancelled"
    assert http.delete(f"/v1/jobs/{job['id']}", headers=alice.headers).status_code == 204
    trail = http.get("/v1/audit", params={"job_id": job["id"]}, headers=bob.headers).json()["items"]
    assert [(e["kind"], e["actor"], e["team"]) for e in trail] == [
        ("submitted", alice.user, alice.team),
        ("cancel", bob.user, alice.team),
        ("deleted", alice.user, alice.team),
    ]
    assert all(e["job_name"] == job["name"] for e in trail)
    only_bob = http.get("/v1/audit", params={"actor": bob.user}, headers=ADMIN).json()["items"]
    assert [e["kind"] for e in only_bob] == ["cancel"]


# ---------------------------------------------------------------- limits


def test_team_queue_limit_holds_under_concurrent_submissions(app: Any, db_url: str) -> None:
    member = new_member(db_url, max_queued=3)
    statuses: list[int] = []
    start = threading.Barrier(12)

    def submit() -> None:
        with TestClient(app, headers=member.headers) as client:  # a client per thread: real concurrency
            start.wait()
            statuses.append(client.post("/v1/jobs", json=spec(name=unique())).status_code)

    threads = [threading.Thread(target=submit) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(statuses) == [202] * 3 + [409] * 9
    with session_scope(db_url) as session:
        stored = session.scalar(select(func.count()).select_from(Job).where(Job.team == member.team))
    assert stored == 3


def test_a_limit_set_between_two_submissions_holds_for_the_second_and_a_team_without_one_is_not_counted(
    http: TestClient, db_url: str
) -> None:
    """A team without limits is admitted from its token's row (``Caller.team_limited``): its
    submission's transaction reads no team and counts no job. A limit an admin sets applies from the
    very next submission, on the token read with it."""
    member = new_member(db_url)
    with statements(db_url) as sent:
        assert http.post("/v1/jobs", json=spec(name=unique()), headers=member.headers).status_code == 202
    assert any(s.lstrip().upper().startswith("INSERT INTO JOBS") for s in sent)  # it was recorded
    assert not [s for s in sent if re.search(r"\bFROM teams\b|\bcount\(", s, re.IGNORECASE)], sent
    assert http.patch(f"/v1/teams/{member.team}", json={"max_queued": 1}, headers=ADMIN).status_code == 200
    refused = http.post("/v1/jobs", json=spec(name=unique()), headers=member.headers)
    assert "max_queued" in assert_problem(refused, 409)["detail"]
    assert http.patch(f"/v1/teams/{member.team}", json={"max_queued": None}, headers=ADMIN).status_code == 200
    assert http.post("/v1/jobs", json=spec(name=unique()), headers=member.headers).status_code == 202


def test_storage_quota_counts_artifacts_and_uploads(
    http: TestClient, settings: Settings, db_url: str, tmp_path: Path
) -> None:
    data = npz_bytes()
    member = new_member(db_url, max_storage_bytes=len(data) + 20)
    assert (
        http.post("/v1/datasets", files={"file": ("d.npz", data)}, headers=member.headers).status_code == 201
    )
    second = http.post("/v1/datasets", files={"file": ("d.npz", data)}, headers=member.headers)
    problem = assert_problem(second, 409)
    assert problem["type"].endswith("storage-quota-exceeded") and "quota" in problem["detail"]
    assert len(http.get("/v1/datasets", headers=member.headers).json()["items"]) == 1  # nothing half-stored
    finished_job_with_artifact(http, settings, member, tmp_path)  # its 43-byte artifact fills the quota
    usage = http.get(f"/v1/teams/{member.team}", headers=member.headers).json()["usage"]
    assert usage["storage_bytes"] == len(data) + len(b"weights of ") + 32
    assert_problem(http.post("/v1/jobs", json=spec(name=unique()), headers=member.headers), 409)


@pytest.fixture
def redis_url() -> str:
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url(REDIS, socket_connect_timeout=2).ping()
    except Exception as e:
        pytest.skip(f"Redis not reachable: {e}")
    return REDIS


def test_rate_limit_per_token_is_429_with_retry_after(
    db_url: str, tmp_path: Path, broker: FakeBroker, redis_url: str
) -> None:
    settings = make_settings(tmp_path, db_url, rate_limit="3/minute", rate_limit_storage=redis_url)
    app = create_app(settings, publish=broker.publish, run_dispatcher=False, check_broker=lambda: None)
    busy, calm = new_member(db_url), new_member(db_url)
    with TestClient(app) as http:
        assert [http.get("/v1/jobs", headers=busy.headers).status_code for _ in range(3)] == [200] * 3
        refused = http.get("/v1/jobs", headers=busy.headers)
        problem = assert_problem(refused, 429)
        assert 1 <= int(refused.headers["retry-after"]) <= 60 and "3/minute" in problem["detail"]
        assert http.get("/v1/jobs", headers=calm.headers).status_code == 200  # per token
    # counted in Redis: a second API process shares the count
    other = create_app(settings, publish=broker.publish, run_dispatcher=False, check_broker=lambda: None)
    with TestClient(other) as http:
        assert_problem(http.get("/v1/jobs", headers=busy.headers), 429)


def test_admin_token_from_the_environment(db_url: str, tmp_path: Path, broker: FakeBroker) -> None:
    secret = f"dst_{uuid.uuid4().hex}"
    settings = make_settings(tmp_path, db_url, admin_token=secret)
    app = create_app(settings, publish=broker.publish, run_dispatcher=False, check_broker=lambda: None)
    headers = {"Authorization": f"Bearer {secret}"}
    with TestClient(app) as http:
        me = http.get("/v1/me", headers=headers).json()
        assert me["user"] == "admin" and me["role"] == "admin"
        http.delete(f"/v1/tokens/{me['token_id']}", headers=headers)
        assert_problem(http.get("/v1/me", headers=headers), 401)
    # the next start makes it work again: the operator who set the variable wants it to
    with TestClient(app) as http:
        assert http.get("/v1/me", headers=headers).status_code == 200

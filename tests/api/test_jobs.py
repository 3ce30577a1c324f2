"""Jobs: submission, idempotency, listing, ETags, cancellation, deletion, broker outages."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from api.app import create_app
from store.artifacts import LocalStore
from store.db import session_scope
from store.models import TERMINAL, Artifact, Job, JobEvent, Metric
from store.pool import heartbeat
from store.settings import Settings
from tests.api.conftest import FakeBroker, make_settings
from tests.api.support import Member, assert_problem, job_row, move, rank, spec, unique

CONTRACT = {
    "id", "name", "status", "attempt", "max_attempts", "queue", "priority", "queue_position", "waiting",
    "progress", "error", "report", "spec", "owner", "team", "version", "created_at", "updated_at",
    "started_at", "finished_at", "links",
}  # fmt: skip


def submit(client: TestClient, **changes: object) -> dict:
    response = client.post("/v1/jobs", json=spec(**changes))
    assert response.status_code == 202, response.text
    return response.json()


def test_submit_answers_202_with_location_and_the_job(
    client: TestClient, broker: FakeBroker, settings: Settings, member: Member
) -> None:
    name = unique()
    response = client.post("/v1/jobs", json=spec(name=name, resources={"gpu_type": "t4", "priority": "high"}))
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert set(job) >= CONTRACT
    assert job["name"] == name and job["status"] == "queued" and job["attempt"] == 0
    assert job["queue"] == "t4" and job["priority"] == "high"
    # answered without ranking the queue: placed by the dispatcher's next pass
    assert job["queue_position"] is None and job["waiting"]["reason"] == "scheduling"
    assert job["max_attempts"] == settings.max_attempts
    assert job["owner"] == member.user and job["team"] == member.team
    assert job["progress"] is None and job["error"] is None and job["report"] is None
    assert job["spec"]["distill"]["epochs"] == 3 and job["spec"]["spec_version"] == 1  # normalized
    assert job["links"] == {
        "self": f"/v1/jobs/{job['id']}",
        "metrics": f"/v1/jobs/{job['id']}/metrics",
        "artifacts": f"/v1/jobs/{job['id']}/artifacts",
        "events": f"/v1/jobs/{job['id']}/events",
    }
    assert job["created_at"].endswith(("Z", "+00:00"))
    # it waits in the database for the scheduler: the broker hears of it once a GPU is free
    assert broker.published == []
    row = job_row(settings.db_url, job["id"])
    assert row is not None and row.published_at is None and row.priority == 1
    assert response.headers["etag"].startswith(f'"{job["version"]}.')  # the version and the place
    rank(settings.db_url)
    placed = client.get(f"/v1/jobs/{job['id']}").json()
    assert placed["queue_position"] == 1 and placed["waiting"]["reason"] == "no_worker"
    history = client.get(f"/v1/jobs/{job['id']}/events", params={"format": "json"}).json()["items"]
    assert [e["kind"] for e in history] == ["submitted"]


def test_idempotency_key_same_body_same_job_other_body_422(client: TestClient) -> None:
    key, body = unique("key"), spec(name=unique())
    first = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
    again = client.post("/v1/jobs", json=dict(reversed(body.items())), headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    assert len(client.get("/v1/jobs", params={"name": body["name"]}).json()["items"]) == 1  # stored once
    other = client.post("/v1/jobs", json=spec(name=unique()), headers={"Idempotency-Key": key})
    problem = assert_problem(other, 422)
    assert problem["errors"][0]["field"] == "Idempotency-Key"
    fresh = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": unique("key")})
    assert fresh.json()["id"] != first.json()["id"]


def test_get_job_etag_and_304(client: TestClient, settings: Settings) -> None:
    job = submit(client, name=unique())
    rank(settings.db_url)
    response = client.get(f"/v1/jobs/{job['id']}")
    tag = response.headers["etag"]
    assert response.status_code == 200 and tag.startswith(f'"{response.json()["version"]}.')
    cached = client.get(f"/v1/jobs/{job['id']}", headers={"If-None-Match": tag})
    assert cached.status_code == 304 and cached.content == b"" and cached.headers["etag"] == tag
    # a job ahead changes its place, not its version: the ETag follows the place
    ahead = submit(client, name=unique(), resources={"priority": "high"})
    rank(settings.db_url)
    moved = client.get(f"/v1/jobs/{job['id']}", headers={"If-None-Match": tag})
    assert moved.status_code == 200 and moved.headers["etag"] != tag
    assert moved.json()["version"] == response.json()["version"]
    assert moved.json()["queue_position"] == response.json()["queue_position"] + 1
    tag = moved.headers["etag"]
    move(settings.db_url, ahead["id"], "cancelled")
    move(settings.db_url, job["id"], "starting")
    changed = client.get(f"/v1/jobs/{job['id']}", headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["etag"] != tag
    assert changed.json()["status"] == "starting" and changed.json()["queue_position"] is None


def test_list_filters_and_cursor_paging(client: TestClient, settings: Settings, member: Member) -> None:
    tag = unique("batch")
    ids = [submit(client, name=f"{tag}-{i}")["id"] for i in range(5)]
    move(settings.db_url, ids[0], "starting", "running", "succeeded", finished_at=None)
    seen, cursor = [], None
    while True:
        params: dict[str, object] = {"name": tag.upper(), "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/jobs", params=params).json()
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))  # newest first, every job once
    queued = client.get("/v1/jobs", params={"name": tag, "status": "queued"}).json()["items"]
    assert {j["id"] for j in queued} == set(ids[1:])
    both = client.get("/v1/jobs", params=[("name", tag), ("status", "queued"), ("status", "succeeded")])
    assert len(both.json()["items"]) == 5
    assert client.get("/v1/jobs", params={"name": tag, "owner": "someone-else"}).json()["items"] == []
    assert client.get("/v1/jobs", params={"name": tag, "team": "vision"}).json()["items"] == []
    assert len(client.get("/v1/jobs", params={"name": tag, "owner": member.user}).json()["items"]) == 5
    assert len(client.get("/v1/jobs", params={"name": tag, "team": member.team}).json()["items"]) == 5
    assert_problem(client.get("/v1/jobs", params={"status": "sleeping"}), 422)
    assert_problem(client.get("/v1/jobs", params={"limit": 201}), 422)
    assert_problem(client.get("/v1/jobs", params={"cursor": "not-a-cursor"}), 422)


def test_queue_positions_follow_priority_then_age(client: TestClient, settings: Settings) -> None:
    queue = unique("gpu")
    low = submit(client, name=unique(), resources={"gpu_type": queue, "priority": "low"})
    normal = submit(client, name=unique(), resources={"gpu_type": queue})
    high = submit(client, name=unique(), resources={"gpu_type": queue, "priority": "high"})
    later = submit(client, name=unique(), resources={"gpu_type": queue})
    rank(settings.db_url)
    expected = {high["id"]: 1, normal["id"]: 2, later["id"]: 3, low["id"]: 4}
    for job_id, position in expected.items():
        assert client.get(f"/v1/jobs/{job_id}").json()["queue_position"] == position
    listed = client.get("/v1/jobs", params={"limit": 200}).json()["items"]
    assert {j["id"]: j["queue_position"] for j in listed if j["id"] in expected} == expected


def test_cancel_queued_running_and_finished(client: TestClient, settings: Settings) -> None:
    queued = submit(client, name=unique())
    response = client.post(f"/v1/jobs/{queued['id']}/cancel")
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    assert response.json()["error"]["type"] == "cancelled"
    assert_problem(client.post(f"/v1/jobs/{queued['id']}/cancel"), 409)

    running = submit(client, name=unique())
    move(settings.db_url, running["id"], "starting", "running")
    response = client.post(f"/v1/jobs/{running['id']}/cancel")
    assert response.status_code == 202 and response.json()["status"] == "cancelling"
    assert client.post(f"/v1/jobs/{running['id']}/cancel").status_code == 202  # asking twice is fine

    done = submit(client, name=unique())
    move(settings.db_url, done["id"], "starting", "running", "succeeded")
    problem = assert_problem(client.post(f"/v1/jobs/{done['id']}/cancel"), 409)
    assert "succeeded" in problem["detail"]
    assert_problem(client.post("/v1/jobs/nope/cancel"), 404)


def test_delete_finished_job_removes_rows_and_files_and_keeps_the_audit_trail(
    client: TestClient, settings: Settings, tmp_path: Path, member: Member
) -> None:
    job = submit(client, name=unique())
    assert_problem(client.delete(f"/v1/jobs/{job['id']}"), 409)  # live: cancel first
    move(settings.db_url, job["id"], "starting", "running", "succeeded")
    source = tmp_path / "student.pt"
    source.write_bytes(b"weights")
    store = LocalStore(Path(settings.artifacts_location))
    stored = store.put(f"jobs/{job['id']}/student.pt", source)
    with session_scope(settings.db_url) as session:
        session.add(
            Artifact(
                job_id=job["id"], name="student.torchscript", filename="student.pt",
                size=stored.size, sha256=stored.sha256, location=stored.location,
            )
        )  # fmt: skip
        session.add(Metric(job_id=job["id"], stage="student", epoch=0, step=0, name="loss", value=1.0))
    file = Path(settings.artifacts_location) / f"jobs/{job['id']}/student.pt"
    assert file.exists()

    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert_problem(client.get(f"/v1/jobs/{job['id']}"), 404)
    assert not file.exists()
    assert_problem(client.get(f"/v1/jobs/{job['id']}/metrics"), 404)
    assert job["id"] not in {j["id"] for j in client.get("/v1/jobs").json()["items"]}
    with session_scope(settings.db_url) as session:
        for model in (Artifact, Metric):
            count = session.scalar(select(func.count()).select_from(model).where(model.job_id == job["id"]))
            assert count == 0, model
        kinds = session.scalars(select(JobEvent.kind).where(JobEvent.job_id == job["id"])).all()
        assert kinds[0] == "submitted" and kinds[-1] == "deleted"  # the events stay: the audit trail
    assert_problem(client.delete(f"/v1/jobs/{job['id']}"), 404)
    trail = client.get("/v1/audit", params={"job_id": job["id"]}).json()["items"]
    assert [(e["kind"], e["actor"]) for e in trail] == [("submitted", member.user), ("deleted", member.user)]


def test_unknown_job_is_a_404_problem(client: TestClient) -> None:
    for path in ("/v1/jobs/nope", "/v1/jobs/nope/metrics", "/v1/jobs/nope/events", "/v1/jobs/nope/artifacts"):
        body = assert_problem(client.get(path), 404)
        assert "nope" in body["detail"] and body["instance"] == path


def test_the_dispatcher_hands_a_job_over_once_a_worker_and_the_broker_are_there(
    db_url: str, tmp_path: Path, member: Member
) -> None:
    """With the lifespan's dispatcher running: a job waits while no worker serves its GPU type,
    and while the broker is down; it is published once both are there."""
    settings = make_settings(tmp_path, db_url, dispatch_interval_s=0.1)
    broker = FakeBroker(down=True)
    gpu = unique("gpu")  # a GPU type of this test's own: other tests' jobs wait for other workers
    app = create_app(settings, publish=broker.publish, check_broker=lambda: None)
    with TestClient(app, headers=member.headers) as client:
        job = submit(client, name=unique(), resources={"gpu_type": gpu})
        deadline = time.monotonic() + 10
        while (waiting := client.get(f"/v1/jobs/{job['id']}").json())["waiting"]["reason"] == "scheduling":
            assert time.monotonic() < deadline, "no dispatcher pass placed the job"
            time.sleep(0.05)
        assert waiting["waiting"]["reason"] == "no_worker" and gpu in waiting["waiting"]["message"]
        with session_scope(settings.db_url) as session:
            # earlier tests' jobs in this module's database are live too, and an `any` one may
            # take (or, started with no known worker, hold) this worker's slot: end them
            session.execute(
                update(Job).where(Job.status.not_in(TERMINAL), Job.id != job["id"])
                .values(status="cancelled")
            )  # fmt: skip
            heartbeat(session, unique("worker"), host="gpu-box", gpu_type=gpu, devices=[])
        time.sleep(0.5)  # several dispatcher passes, each failing to reach the broker
        assert broker.published == []
        broker.down = False
        deadline = time.monotonic() + 10
        while job["id"] not in broker.ids():
            assert time.monotonic() < deadline, "the dispatcher never published the job"
            time.sleep(0.05)
    row = job_row(settings.db_url, job["id"])
    assert row is not None and row.published_at is not None and row.status == "queued"

"""Metrics (incremental cursor, filters, downsampling) and events (JSON history, SSE stream)."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from api.app import create_app
from store.db import session_scope
from store.jobs import record_metrics, touch
from store.settings import Settings
from tests.api.conftest import FakeBroker
from tests.api.support import Member, assert_problem, move, spec, unique
from tests.reports import REPORT
from tests.service import free_port


def submit(client: TestClient) -> str:
    response = client.post("/v1/jobs", json=spec(name=unique()))
    assert response.status_code == 202
    return str(response.json()["id"])


def record(db_url: str, job_id: str, stage: str, epochs: range, **values: float) -> None:
    with session_scope(db_url) as session:
        for epoch in epochs:
            record_metrics(
                session, job_id, stage, epoch, epoch * 10, {k: v + epoch for k, v in values.items()}
            )


def test_metrics_incremental_polling(client: TestClient, settings: Settings) -> None:
    job_id = submit(client)
    empty = client.get(f"/v1/jobs/{job_id}/metrics").json()
    assert empty == {"items": [], "next_cursor": "0", "has_more": False}
    record(settings.db_url, job_id, "teacher", range(3), loss=1.0, acc=0.5)
    first = client.get(f"/v1/jobs/{job_id}/metrics").json()
    assert len(first["items"]) == 6 and not first["has_more"]
    ids = [m["id"] for m in first["items"]]
    assert ids == sorted(ids) and first["next_cursor"] == str(ids[-1])
    item = next(m for m in first["items"] if m["name"] == "loss" and m["epoch"] == 2)
    assert item | {"id": 0} == {
        "id": 0,
        "stage": "teacher",
        "epoch": 2,
        "step": 20,
        "name": "loss",
        "value": 3.0,
    }

    nothing = client.get(f"/v1/jobs/{job_id}/metrics", params={"after": first["next_cursor"]}).json()
    assert nothing["items"] == [] and nothing["next_cursor"] == first["next_cursor"]
    record(settings.db_url, job_id, "student", range(2), loss=2.0)
    new = client.get(f"/v1/jobs/{job_id}/metrics", params={"after": first["next_cursor"]}).json()
    assert [(m["stage"], m["epoch"]) for m in new["items"]] == [("student", 0), ("student", 1)]

    paged = client.get(f"/v1/jobs/{job_id}/metrics", params={"limit": 5}).json()
    assert len(paged["items"]) == 5 and paged["has_more"]
    rest = client.get(f"/v1/jobs/{job_id}/metrics", params={"after": paged["next_cursor"]}).json()
    assert [m["id"] for m in paged["items"] + rest["items"]] == ids + [m["id"] for m in new["items"]]

    only = client.get(f"/v1/jobs/{job_id}/metrics", params={"stage": "teacher", "name": "acc"}).json()
    assert [m["value"] for m in only["items"]] == [0.5, 1.5, 2.5]
    assert_problem(client.get(f"/v1/jobs/{job_id}/metrics", params={"after": "x"}), 422)


def test_metrics_downsampling_keeps_ends_of_each_series(client: TestClient, settings: Settings) -> None:
    job_id = submit(client)
    record(settings.db_url, job_id, "student", range(1000), loss=0.0, acc=0.0)
    record(settings.db_url, job_id, "baseline", range(7), loss=0.0)
    body = client.get(f"/v1/jobs/{job_id}/metrics", params={"max_points": 50}).json()
    series: dict[tuple[str, str], list[int]] = {}
    for m in body["items"]:
        series.setdefault((m["stage"], m["name"]), []).append(m["epoch"])
    assert set(series) == {("student", "loss"), ("student", "acc"), ("baseline", "loss")}
    for key in [("student", "loss"), ("student", "acc")]:
        epochs = series[key]
        assert len(epochs) == 50 and epochs[0] == 0 and epochs[-1] == 999 and epochs == sorted(epochs)
        gaps = {b - a for a, b in itertools.pairwise(epochs)}
        assert max(gaps) - min(gaps) <= 1  # evenly strided
    assert series[("baseline", "loss")] == list(range(7))  # short series untouched
    assert [m["id"] for m in body["items"]] == sorted(m["id"] for m in body["items"])
    all_rows = client.get(f"/v1/jobs/{job_id}/metrics", params={"limit": 10_000}).json()
    assert body["next_cursor"] == all_rows["next_cursor"]  # the next poll starts after every row read
    assert_problem(client.get(f"/v1/jobs/{job_id}/metrics", params={"max_points": 1}), 422)


def test_events_as_json_with_cursor(client: TestClient, settings: Settings) -> None:
    job_id = submit(client)
    move(settings.db_url, job_id, "starting", "running")
    events = client.get(f"/v1/jobs/{job_id}/events", headers={"Accept": "application/json"}).json()
    kinds = [(e["kind"], e["to_status"]) for e in events["items"]]
    assert kinds == [("submitted", "queued"), ("status", "starting"), ("status", "running")]
    after = client.get(
        f"/v1/jobs/{job_id}/events", params={"format": "json", "after": events["items"][0]["id"]}
    ).json()
    assert [e["to_status"] for e in after["items"]] == ["starting", "running"]
    first = client.get(f"/v1/jobs/{job_id}/events", params={"format": "json", "limit": 1}).json()
    assert len(first["items"]) == 1 and first["has_more"]


# ---------------------------------------------------------------- Server-Sent Events, over a real server


@pytest.fixture
def server(settings: Settings, broker: FakeBroker) -> Iterator[str]:
    app = create_app(settings, publish=broker.publish, run_dispatcher=False, check_broker=lambda: None)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def read_sse(response: httpx.Response, deadline: float) -> Iterator[tuple[str, str, str | None]]:
    """(event, data, id) per message, until the stream ends; fails past ``deadline``."""
    event, ident = "message", None
    data: list[str] = []
    for line in response.iter_lines():
        assert time.monotonic() < deadline, "the stream did not end in time"
        if line == "":
            if data:
                yield event, "\n".join(data), ident
            event, data, ident = "message", [], None
        elif line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])
        elif line.startswith("id: "):
            ident = line[4:]


def test_sse_follows_a_job_to_its_end(server: str, settings: Settings, member: Member) -> None:
    with httpx.Client(base_url=server, timeout=10, headers=member.headers) as http:
        job_id = http.post("/v1/jobs", json=spec(name=unique())).json()["id"]

        def worker() -> None:
            time.sleep(0.3)
            move(settings.db_url, job_id, "starting", "running")
            with session_scope(settings.db_url) as session:
                touch(
                    session, job_id, progress={"stage": "student", "epoch": 1, "epochs": 3, "fraction": 0.5}
                )
            time.sleep(0.6)
            move(settings.db_url, job_id, "succeeded", report=REPORT)

        thread = threading.Thread(target=worker)
        thread.start()
        messages = []
        # The read timeout (5 s) bounds each wait; the deadline bounds the whole stream.
        with http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=httpx.Timeout(5.0)) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            messages = list(read_sse(response, time.monotonic() + 20))
        thread.join()

    jobs = [json.loads(data) for event, data, _ in messages if event == "job"]
    events = [(json.loads(data), ident) for event, data, ident in messages if event == "event"]
    assert jobs[0]["status"] == "queued" and jobs[-1]["status"] == "succeeded"
    assert jobs[-1]["report"] == REPORT
    assert any(j["progress"] for j in jobs)  # a progress-only change was sent too
    statuses = [e["to_status"] for e, _ in events]
    assert statuses == ["queued", "starting", "running", "succeeded"]
    assert all(ident == str(e["id"]) for e, ident in events)

    # Reconnecting with Last-Event-ID resumes after it, and a finished job's stream ends at once.
    with httpx.Client(base_url=server, timeout=5, headers=member.headers) as http:
        last = str(events[1][0]["id"])
        with http.stream("GET", f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": last}) as response:
            again = list(read_sse(response, time.monotonic() + 10))
    assert [json.loads(d)["to_status"] for e, d, _ in again if e == "event"] == ["running", "succeeded"]
    assert [json.loads(d)["status"] for e, d, _ in again if e == "job"] == ["succeeded"]

"""Fair scheduling on a real pool: two Celery workers (two slots), PostgreSQL and Redis."""

from __future__ import annotations

import contextlib
import time
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import TINY_JOB, Service

QUICK_JOB: dict[str, Any] = {
    **TINY_JOB,
    "data": {"kind": "mnist1d", "train_limit": 200},
    "teacher": {"model": {"kind": "cnn1d", "channels": 8}, "train": {"epochs": 1, "batch_size": 50}},
    "distill": {"epochs": 1, "batch_size": 50},
    "export": ["safetensors"],
}


def started(job: dict[str, Any]) -> datetime | None:
    return datetime.fromisoformat(job["started_at"]) if job["started_at"] else None


def wait_for_workers(service: Service, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = service.http.get("/v1/pool").json()["workers"]
        if sum(w["status"] == "online" for w in workers) == count:
            return
        time.sleep(0.3)
    raise AssertionError(f"{count} workers did not come online\n{service.all_logs()}")


@pytest.mark.parametrize("deployment", ["postgres-redis"], indirect=True)
def test_a_team_with_a_long_queue_does_not_hold_the_pool(service: Service) -> None:
    """Team A queues 20 jobs, then team B queues 2: B's first job takes the next free slot."""
    service.start_api()
    # one worker per (pretend) GPU, as in production: `--gpu N` also names the worker
    service.start_worker("--gpu", "0")
    service.start_worker("--gpu", "1")
    wait_for_workers(service, 2)
    team_a = service.add_member("ann", "team-a")
    team_b = service.add_member("bob", "team-b")

    a_ids = [team_a.post("/v1/jobs", json={**QUICK_JOB, "name": f"a-{i}"}).json()["id"] for i in range(20)]
    b_ids = [team_b.post("/v1/jobs", json={**QUICK_JOB, "name": f"b-{i}"}).json()["id"] for i in range(2)]
    try:
        first_b = team_b.get(f"/v1/jobs/{b_ids[0]}").json()
        if first_b["waiting"] is not None:  # still waiting: B is next in line, ahead of A's backlog
            assert first_b["waiting"]["reason"] in ("pool_busy", "dispatching", "dispatched"), first_b
            third_a = team_a.get(f"/v1/jobs/{a_ids[2]}").json()
            assert first_b["queue_position"] < third_a["queue_position"], (first_b, third_a)

        deadline = time.monotonic() + 240
        while (first_b := team_b.get(f"/v1/jobs/{b_ids[0]}").json())["started_at"] is None:
            assert time.monotonic() < deadline, service.all_logs()
            time.sleep(0.3)
        a_jobs = [team_a.get(f"/v1/jobs/{i}").json() for i in a_ids]
        b_start = started(first_b)
        assert b_start is not None
        a_before = [j["name"] for j in a_jobs if (s := started(j)) is not None and s < b_start]
        # the two slots were A's when B arrived; the first slot to free went to B
        assert len(a_before) == 2, (a_before, service.all_logs())
        finished_a = [j for j in a_jobs if j["finished_at"]]
        assert len(finished_a) <= 2  # B did not wait for A's queue to drain
    finally:
        for client, ids in ((team_a, a_ids), (team_b, b_ids)):
            for job_id in ids:
                with contextlib.suppress(httpx.HTTPError):
                    client.post(f"/v1/jobs/{job_id}/cancel")

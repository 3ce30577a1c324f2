"""Hosts with several slots on a real pool: two `distill worker --slots 2` hosts, PostgreSQL and Redis.

A job asking for 2 GPUs gets both slots of one host, all or nothing, while 1-GPU jobs use the
other slots; a stream of 1-GPU jobs submitted before and after it does not keep it waiting until
the stream has run dry. What is checked is where each job ran (its placement, as the API shows it)
and when, and that the 2-GPU job ran data-parallel (two ranks) on what it was given.
"""

from __future__ import annotations

import contextlib
import time
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.e2e.test_fairness import QUICK_JOB, dispatched, wait_for_workers
from tests.service import TERMINAL, Service

HOSTS = ("host-a", "host-b")
BIG_JOB: dict[str, Any] = {
    **QUICK_JOB,
    "name": "big",
    "distill": {"epochs": 3, "batch_size": 50},  # a little longer than the small ones
    "resources": {"gpus": 2},
}


def node(host: str) -> str:
    return f"distillery-any@{host}"


def interval(job: dict[str, Any]) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(job["started_at"]), datetime.fromisoformat(job["finished_at"])


def overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    (a0, a1), (b0, b1) = interval(a), interval(b)
    return a0 < b1 and b0 < a1


def wait_all(
    client: httpx.Client, ids: list[str], service: Service, timeout: float = 300
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = [client.get(f"/v1/jobs/{job_id}").json() for job_id in ids]
        if all(job["status"] in TERMINAL for job in jobs):
            return jobs
        assert time.monotonic() < deadline, ([(j.get("name"), j["status"]) for j in jobs], service.all_logs())
        time.sleep(0.5)


@pytest.mark.parametrize("deployment", ["postgres-redis"], indirect=True)
def test_a_two_gpu_job_gets_a_whole_host_beside_a_stream_of_one_gpu_jobs(service: Service) -> None:
    # polling 13 jobs twice a second is over the default 1,200 requests a minute: on a slow run,
    # every round would then meet a 429 and never see them all finished
    service.env["DISTILLERY_RATE_LIMIT"] = "1000000/minute"
    service.start_api()
    for host in HOSTS:
        service.start_worker("--slots", "2", "--hostname", host)
    wait_for_workers(service, 2)
    pool = service.http.get("/v1/pool").json()
    assert {(w["id"], w["slots"]) for w in pool["workers"]} == {(node(h), 2) for h in HOSTS}
    assert all([d["index"] for d in w["devices"]] == [0, 1] for w in pool["workers"])
    client = service.http

    def submit(spec: dict[str, Any]) -> str:
        answer = client.post("/v1/jobs", json=spec)
        assert answer.status_code == 202, answer.text
        return str(answer.json()["id"])

    before = [submit({**QUICK_JOB, "name": f"before-{i}"}) for i in range(4)]
    big = submit(BIG_JOB)
    after = [submit({**QUICK_JOB, "name": f"after-{i}"}) for i in range(8)]
    ids = [*before, big, *after]
    try:
        seen_on_pool, deadline = False, time.monotonic() + 300
        while client.get(f"/v1/jobs/{big}").json()["finished_at"] is None:
            assert time.monotonic() < deadline, service.all_logs()
            # while it runs, the pool shows the host it holds, whole
            for worker in client.get("/v1/pool").json()["workers"]:
                for job in worker["jobs"]:
                    if job["id"] == big and job["status"] in ("starting", "running"):
                        assert job["devices"] == [0, 1] and worker["free_slots"] == 0, worker
                        seen_on_pool = True
            time.sleep(0.3)
        jobs = wait_all(client, ids, service)
    finally:
        for job_id in ids:
            with contextlib.suppress(httpx.HTTPError):
                client.post(f"/v1/jobs/{job_id}/cancel")
    logs = service.all_logs()
    failed = [(j["name"], j["status"], j["error"]) for j in jobs if j["status"] != "succeeded"]
    assert failed == [] and all(j["started_at"] for j in jobs), f"{failed}\n{logs}"
    # the 2-GPU job ran data-parallel on its two slots: two gloo ranks, confined together
    lines = [
        e["message"] for e in client.get(f"/v1/jobs/{big}/events", params={"format": "json"}).json()["items"]
    ]
    assert any("data-parallel on 2 cpu devices (gloo)" in line for line in lines), lines
    by_id = {job["id"]: job for job in jobs}
    placement = by_id[big]["placement"]
    # all or nothing: both slots of one host
    assert placement is not None and placement["devices"] == [0, 1], by_id[big]
    assert placement["worker"] in {node(h) for h in HOSTS}
    assert by_id[big]["gpus"] == 2 and seen_on_pool
    assert {j["placement"]["worker"] for j in jobs} == {node(h) for h in HOSTS}
    assert all(len(by_id[i]["placement"]["devices"]) == 1 for i in [*before, *after])

    # no device was ever held by two jobs at once
    for a in jobs:
        for b in jobs:
            if a["id"] < b["id"] and a["placement"]["worker"] == b["placement"]["worker"]:
                shared = set(a["placement"]["devices"]) & set(b["placement"]["devices"])
                assert not (shared and overlap(a, b)), (a["name"], b["name"], a["placement"], b["placement"])

    # 1-GPU jobs used the other host's slots while the 2-GPU job ran
    beside = [j for j in jobs if j["placement"]["worker"] != placement["worker"] and overlap(j, by_id[big])]
    assert beside, [(j["name"], j["placement"], interval(j)) for j in jobs]

    # the later 1-GPU jobs did not keep it waiting: the order of hand-over (dispatch passes are
    # serialized, so event ids follow it) has it before most of them
    order = [name for _id, name in sorted((e, n) for i in ids for n, e in dispatched(client, i))]
    passed = order[: order.index("big")]
    assert all(f"before-{i}" in passed for i in range(4)), order
    assert sum(name.startswith("after-") for name in passed) <= 4, order

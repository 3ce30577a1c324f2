"""A job that runs out of memory on a real worker: typed, not retried, and the pool moves on.

The worker runs under an address-space cap (RLIMIT_AS), so a model the service's limits allow
but the host cannot hold makes the allocator itself fail, as on a machine without the memory.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from datetime import datetime
from typing import Any

import httpx

from tests.service import DISTILL, TINY_JOB, Service

# About 9.6e8 parameters: under the default DISTILLERY_MAX_PARAMS (1e9), yet one layer alone
# (31000 x 31000 float32) is 3.8 GB, more than the cap leaves free.
BIG_JOB: dict[str, Any] = {
    **TINY_JOB,
    "name": "too-big-for-the-host",
    "teacher": {"model": {"kind": "mlp", "hidden": [31000, 31000]}, "train": {"epochs": 1}},
}
HEADROOM = 2 << 30  # address space the worker's job process has beyond what its imports take


def engine_address_space(env: dict[str, str]) -> int:
    """Bytes of address space a process takes once it has imported the engine and the worker."""
    probe = (
        "import torch, core.runner, worker.tasks, mnist1d.data\n"
        "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmPeak')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) * 1024


def start_capped_worker(service: Service, cap: int) -> None:
    """``distill worker`` with its address space capped; the job process it forks inherits the cap."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    out = (service.home / "worker0.log").open("ab")
    proc = subprocess.Popen(
        [DISTILL, "worker"],
        env=service.env,
        stdout=out,
        stderr=out,
        start_new_session=True,
        preexec_fn=limit,
    )
    service.workers.append(proc)


def wait_for(service: Service, client: httpx.Client, job_id: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish\n{service.all_logs()}")


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_an_out_of_memory_job_fails_once_and_the_next_job_runs(service: Service) -> None:
    service.start_api()
    start_capped_worker(service, engine_address_space(service.env) + HEADROOM)
    team_a = service.add_member("ann", "team-a")
    team_b = service.add_member("bob", "team-b")

    big = team_a.post("/v1/jobs", json=BIG_JOB)
    assert big.status_code == 202, big.text  # the spec is within the service's limits
    small = team_b.post("/v1/jobs", json={**TINY_JOB, "name": "after-the-oom"})
    assert small.status_code == 202, small.text

    failed = wait_for(service, team_a, big.json()["id"])
    assert failed["status"] == "failed", service.all_logs()
    assert failed["error"]["type"] == "out_of_memory", failed["error"]
    assert "can't allocate memory" in failed["error"]["message"]
    assert failed["attempt"] == 1  # not retried
    events = team_a.get(f"/v1/jobs/{failed['id']}/events", params={"format": "json"}).json()["items"]
    assert [e.get("to_status") for e in events].count("starting") == 1  # claimed once
    assert "retrying" not in [e.get("to_status") for e in events]

    done = wait_for(service, team_b, small.json()["id"])
    assert done["status"] == "succeeded", service.all_logs()
    assert done["attempt"] == 1
    # a fresh job process took it as soon as the failed one was over
    gap = (at(done["started_at"]) - at(failed["finished_at"])).total_seconds()
    assert 0 <= gap < 30, gap

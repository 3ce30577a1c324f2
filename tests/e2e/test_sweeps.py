"""Sweeps end to end on PostgreSQL and Redis, with a real API process and real Celery workers:
the teacher and the baseline trained once for the whole sweep, a trial pruned with its reason,
cancel, and a worker killed during a trial."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.service import TINY_JOB, Service, base_env

LR = "distill.optimizer.lr"
TEMPERATURE = "distill.losses.0.temperature"
SWEEP_TERMINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture
def service(pg_database: str, redis_db: str, tmp_path: Path) -> Iterator[Service]:
    env = base_env(tmp_path, DISTILLERY_DATABASE_URL=pg_database, DISTILLERY_BROKER_URL=redis_db)
    svc = Service(env=env, home=tmp_path)
    try:
        yield svc
    finally:
        svc.stop()


def base(**changes: Any) -> dict[str, Any]:
    return {**TINY_JOB, "export": ["safetensors"], **changes}


def start(service: Service, **body: Any) -> dict[str, Any]:
    response = service.http.post("/v1/sweeps", json={"name": "e2e-sweep", "base": base(), **body})
    assert response.status_code == 202, response.text
    return response.json()  # type: ignore[no-any-return]


def wait_sweep(service: Service, sweep_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sweep = service.http.get(f"/v1/sweeps/{sweep_id}").json()
        if sweep["status"] in SWEEP_TERMINAL:
            return sweep  # type: ignore[no-any-return]
        time.sleep(0.5)
    raise AssertionError(f"sweep {sweep_id} still running\n{service.all_logs()}")


def wait_running(service: Service, job_id: str, stage: str = "student", timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = service.http.get(f"/v1/jobs/{job_id}").json()
        if (job["progress"] or {}).get("stage") == stage and job["status"] == "running":
            return
        assert job["status"] not in ("succeeded", "failed", "cancelled", "pruned"), job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never ran {stage}\n{service.all_logs()}")


def messages(service: Service, job_id: str) -> str:
    page = service.http.get(f"/v1/jobs/{job_id}/events", params={"format": "json", "limit": 500}).json()
    return "\n".join(e["message"] for e in page["items"])


def test_one_teacher_for_the_sweep_and_bad_trials_are_pruned(service: Service) -> None:
    service.start_api()
    service.start_worker()
    # seed 1 orders this grid [4, 0.1, 0.05]: the usual temperature first, alone (max_concurrent
    # 1); the tiny ones barely move the student (T² scales their gradient down) and are pruned.
    # The temperature is no part of the baseline's budget: the baseline is shared too.
    sweep = start(
        service,
        params={TEMPERATURE: [4.0, 0.05, 0.1]},
        seed=1,
        max_concurrent=1,
        early_stopping={"kind": "median", "startup_trials": 1, "warmup_epochs": 0},
    )
    done = wait_sweep(service, sweep["id"])
    assert done["status"] == "succeeded", done
    trials = {t["number"]: t for t in done["trials"]}
    assert trials[0]["params"] == {TEMPERATURE: 4.0} and trials[0]["status"] == "succeeded"
    assert done["best"]["number"] == 0 and done["best_value"] == trials[0]["objective"]
    pruned = [t for t in done["trials"] if t["status"] == "pruned"]
    assert pruned, done["trials"]
    for trial in pruned:
        assert trial["error"].startswith("pruned by the median rule at student epoch"), trial
        assert trial["pruned_at_epoch"] is not None and trial["pruned_at_epoch"] < 4
        job = service.http.get(f"/v1/jobs/{trial['job_id']}").json()
        assert job["status"] == "pruned" and job["error"]["type"] == "pruned"
    # the teacher and the baseline: trained by trial 0 alone, reused by every other trial
    first = trials[0]["job_id"]
    assert "stage teacher: kept" in messages(service, first)
    for trial in done["trials"][1:]:
        said = messages(service, trial["job_id"])
        assert f"stage teacher: reused from job {first}" in said, said
        assert f"stage baseline: reused from job {first}" in said, said
        assert "stage teacher: kept" not in said


def test_cancel_stops_the_sweep_and_its_running_trial(service: Service) -> None:
    service.start_api()
    service.start_worker()
    spec = base(distill={"epochs": 40, "batch_size": 50})
    sweep = start(service, base=spec, params={LR: [0.01, 0.005]}, max_concurrent=2)
    first = sweep["trials"][0]["job_id"]
    wait_running(service, first, stage="teacher")
    response = service.http.post(f"/v1/sweeps/{sweep['id']}/cancel")
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    assert service.wait_for(first)["status"] == "cancelled"
    shown = service.http.get(f"/v1/sweeps/{sweep['id']}").json()
    assert [t["number"] for t in shown["trials"]] == [0]  # the second never started


def test_a_worker_killed_during_a_trial_and_the_sweep_still_completes(service: Service) -> None:
    service.env["DISTILLERY_LEASE_S"] = "3"
    service.start_api()
    first_worker = service.start_worker()
    # long enough a student stage to be seen running and killed on a fast machine: at 30 epochs
    # one CI run saw the trial only once it had succeeded, polling every 0.2 s
    spec = base(data={"kind": "mnist1d", "train_limit": 800}, distill={"epochs": 150, "batch_size": 50})
    sweep = start(service, base=spec, params={LR: [0.01, 0.005]}, max_concurrent=1)
    first = sweep["trials"][0]["job_id"]
    wait_running(service, first)
    service.kill(first_worker, signal.SIGKILL)
    service.start_worker()
    done = wait_sweep(service, sweep["id"])
    assert done["status"] == "succeeded", done
    assert [t["status"] for t in done["trials"]] == ["succeeded", "succeeded"]
    job = service.http.get(f"/v1/jobs/{first}").json()
    assert job["attempt"] == 2, job
    assert all(t["objective"] is not None for t in done["trials"])

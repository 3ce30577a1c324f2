"""The service end to end, over HTTP, with a real uvicorn server and real Celery worker processes.

Each test runs on the embedded default (SQLite, a file-based broker) and on this machine's
PostgreSQL and Redis.
"""

from __future__ import annotations

import hashlib
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from core.data import load_dataset
from core.spec import parse_spec
from tests.service import TINY_JOB, Service, base_env, free_port


def submit(service: Service, spec: dict[str, Any], **headers: str) -> dict[str, Any]:
    r = service.http.post("/v1/jobs", json=spec, headers=headers, timeout=30)
    assert r.status_code == 202, r.text
    assert r.headers["Location"] == f"/v1/jobs/{r.json()['id']}"
    return r.json()  # type: ignore[no-any-return]


def all_metrics(service: Service, job_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": 500, **({"after": cursor} if cursor else {})}
        page = service.http.get(f"/v1/jobs/{job_id}/metrics", params=params, timeout=30).json()
        items += page["items"]
        if not page["items"] or not page.get("next_cursor"):
            return items
        cursor = page["next_cursor"]


def test_a_job_runs_end_to_end(service: Service, tmp_path: Path) -> None:
    service.start_api()
    service.start_worker()
    job = submit(service, TINY_JOB)
    assert job["status"] in ("queued", "starting", "running") and job["attempt"] in (0, 1)
    done = service.wait_for(job["id"])
    assert done["status"] == "succeeded", service.all_logs()
    report = done["report"]
    assert (
        report["student"]["test_top1"] > 0.15 and done["attempt"] == 1 and done["error"] is None
    )  # chance: 0.1

    metrics = all_metrics(service, job["id"])
    stages = {(m["stage"], m["epoch"]) for m in metrics}
    assert {("teacher", 5), ("baseline", 4), ("student", 4)} <= stages
    assert all({"stage", "epoch", "step", "name", "value"} <= set(m) for m in metrics)

    items = service.http.get(f"/v1/jobs/{job['id']}/artifacts", timeout=30).json()["items"]
    by_name = {a["name"]: a for a in items}
    assert {"student_torchscript", "student_safetensors", "report"} <= set(by_name)
    student = by_name["student_torchscript"]
    assert student["filename"] == report["artifacts"]["student_torchscript"]
    r = service.http.get(f"{student['url']}", timeout=60)
    assert r.status_code == 200 and len(r.content) == student["size"]
    assert hashlib.sha256(r.content).hexdigest() == student["sha256"]
    path = tmp_path / "student.pt"
    path.write_bytes(r.content)

    data = load_dataset(parse_spec(TINY_JOB).data, tmp_path, seed=0)
    model = torch.jit.load(str(path))
    with torch.inference_mode():
        accuracy = (model(data.test.x).argmax(1) == data.test.y).double().mean().item()
    assert accuracy == pytest.approx(report["student"]["test_top1"], abs=1e-9)


def test_a_killed_worker_resumes_from_its_checkpoint(service: Service) -> None:
    service.env["DISTILLERY_LEASE_S"] = "3"
    service.start_api()
    first = service.start_worker()
    # a student stage long enough (60 epochs of 32 steps) that the kill lands inside it even when
    # a loaded machine makes the progress the test polls lag seconds behind the engine
    spec = {
        **TINY_JOB,
        "data": {"kind": "mnist1d", "train_limit": 1600},
        "distill": {"epochs": 60, "batch_size": 50},
    }
    job = submit(service, spec)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # let it reach the middle of distillation
        progress = service.http.get(f"/v1/jobs/{job['id']}", timeout=10).json()["progress"] or {}
        if progress.get("stage") == "student" and progress.get("epoch", 0) >= 5:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the job never reached the distillation stage\n" + service.all_logs())
    service.kill(first, signal.SIGKILL)
    service.start_worker()
    done = service.wait_for(job["id"], timeout=300)
    assert done["status"] == "succeeded", service.all_logs()
    assert done["attempt"] == 2

    metrics = all_metrics(service, job["id"])
    keys = Counter((m["stage"], m["epoch"], m["step"], m["name"]) for m in metrics)
    assert max(keys.values()) == 1, "a replayed epoch duplicated metric rows"
    assert {e for s, e, _, n in keys if s == "student" and n == "val/top1"} == set(range(1, 61))
    history = service.http.get(f"/v1/jobs/{job['id']}/events", params={"format": "json"}, timeout=10).json()
    messages = " ".join(e["message"] for e in history["items"])
    assert "retry" in messages and "resumed student after epoch" in messages, messages


def test_duplicate_deliveries_run_a_job_once(service: Service) -> None:
    service.start_api()
    service.start_worker()
    job = submit(service, TINY_JOB)
    from store.settings import Settings
    from worker.celery_app import make_celery, publish

    fields = {
        k.removeprefix("DISTILLERY_").lower(): v
        for k, v in service.env.items()
        if k.startswith("DISTILLERY_")
    }
    publish(make_celery(Settings(**fields)), job["id"], "any")  # a second message for the same job
    done = service.wait_for(job["id"])
    assert done["status"] == "succeeded" and done["attempt"] == 1
    history = service.http.get(f"/v1/jobs/{job['id']}/events", params={"format": "json"}, timeout=10).json()
    claims = [e for e in history["items"] if e.get("to_status") == "starting"]
    assert len(claims) == 1


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary")
def test_a_job_submitted_while_the_broker_is_down_runs_when_it_is_back(
    tmp_path: Path, pg_database: str
) -> None:
    port = free_port()

    def start_redis() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                import redis

                if redis.Redis(port=port).ping():
                    return proc
            except redis.ConnectionError:
                time.sleep(0.1)
        raise AssertionError("private redis did not start")

    broker = start_redis()
    env = base_env(
        tmp_path, DISTILLERY_DATABASE_URL=pg_database, DISTILLERY_BROKER_URL=f"redis://127.0.0.1:{port}/0"
    )
    service = Service(env=env, home=tmp_path)
    try:
        service.start_api()
        service.start_worker()
        broker.terminate()
        broker.wait(timeout=10)
        job = submit(service, TINY_JOB)  # accepted and stored although nothing can be published
        time.sleep(2)
        assert service.http.get(f"/v1/jobs/{job['id']}", timeout=10).json()["status"] == "queued"
        broker = start_redis()
        done = service.wait_for(job["id"], timeout=240)
        assert done["status"] == "succeeded", service.all_logs()
    finally:
        service.stop()
        broker.terminate()


def test_uploaded_teacher_and_dataset_feed_a_job(service: Service, tmp_path: Path) -> None:
    """The paths the upload routes return are the ones the workers read."""
    import io

    import numpy as np

    from core.models import build_classifier

    service.start_api()
    service.start_worker()
    data = load_dataset(parse_spec(TINY_JOB).data, tmp_path, seed=0)
    archive = io.BytesIO()
    np.savez(
        archive,
        x_train=data.train.x.numpy(),
        y_train=data.train.y.numpy(),
        x_test=data.test.x.numpy(),
        y_test=data.test.y.numpy(),
    )
    r = service.http.post(
        "/v1/datasets", files={"file": ("mnist1d-small.npz", archive.getvalue())}, timeout=60
    )
    assert r.status_code == 201, r.text
    dataset_path = r.json()["path"]

    torch.manual_seed(0)
    teacher = build_classifier(parse_spec(TINY_JOB).teacher.model, data, tmp_path).eval()
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.trace(teacher, data.test.x[:4]), buffer)
    r = service.http.post("/v1/models", files={"file": ("teacher.pt", buffer.getvalue())}, timeout=60)
    assert r.status_code == 201, r.text
    model_path = r.json()["path"]

    spec = {
        **TINY_JOB,
        "data": {"kind": "npz", "path": dataset_path},
        "teacher": {"model": {"kind": "torchscript", "path": model_path}},
    }
    done = service.wait_for(submit(service, spec)["id"])
    assert done["status"] == "succeeded", (done["error"], service.all_logs())
    assert done["report"]["teacher"]["source"] == "checkpoint"
    assert done["report"]["dataset"]["kind"] == "npz" and done["report"]["dataset"]["test_size"] == len(
        data.test
    )
    with torch.inference_mode():
        expected = (teacher(data.test.x).argmax(1) == data.test.y).double().mean().item()
    assert done["report"]["teacher"]["test_top1"] == pytest.approx(expected)


def test_the_pool_shows_workers_and_a_silent_one_is_lost_and_its_job_requeued(service: Service) -> None:
    """Detection is bounded by DISTILLERY_WORKER_TIMEOUT_S + one heartbeat + one dispatcher pass.

    The timeout is longer than any gap between heartbeats that load makes: with 4 s, a loaded
    2-core CI machine (the engine's import took 11.8 s) once found the live worker lost before
    the kill, and the job ended at its third attempt."""
    timeout_s, heartbeat_s, dispatch_s = 8.0, 1.0, 0.5
    service.env |= {
        "DISTILLERY_LEASE_S": "600",  # long: only the missing heartbeats can free the job
        "DISTILLERY_HEARTBEAT_S": str(heartbeat_s),
        "DISTILLERY_WORKER_TIMEOUT_S": str(timeout_s),
    }
    service.start_api()
    first = service.start_worker()
    job = submit(service, {**TINY_JOB, "distill": {"epochs": 60, "batch_size": 50}})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pool = service.http.get("/v1/pool", timeout=10).json()
        busy = [w for w in pool["workers"] if w["status"] == "online" and w["job"]]
        if busy and busy[0]["job"]["id"] == job["id"] and busy[0]["job"]["status"] == "running":
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"no online worker showed the job: {pool}\n{service.all_logs()}")
    assert busy[0]["devices"] and pool["queues"] == [{"queue": "any", "queued": 0, "running": 1}]

    service.kill(first, signal.SIGKILL)
    killed = time.monotonic()
    while time.monotonic() - killed < 60:
        status = service.http.get(f"/v1/jobs/{job['id']}", timeout=10).json()["status"]
        if status in ("retrying", "queued"):
            break
        time.sleep(0.2)
    detected = time.monotonic() - killed
    assert status in ("retrying", "queued"), service.all_logs()
    assert detected < timeout_s + heartbeat_s + dispatch_s + 3.0, f"requeued after {detected:.1f}s"
    workers = service.http.get("/v1/pool", timeout=10).json()["workers"]
    assert [w["status"] for w in workers] == ["lost"]

    service.start_worker()
    done = service.wait_for(job["id"], timeout=300)
    assert done["status"] == "succeeded" and done["attempt"] == 2, service.all_logs()

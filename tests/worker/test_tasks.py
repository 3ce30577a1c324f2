"""Jobs run by a real Celery worker process (never eager mode), on both deployments."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from sqlalchemy import select

from domain.lifecycle import request_cancel
from store.artifacts import open_store
from store.db import session_scope
from store.models import Artifact, Job, Metric
from tests.worker.support import (
    SLOW,
    TINY,
    Deployment,
    WorkerProcess,
    claims,
    get_job,
    insert_job,
    wait_status,
    wait_until,
)
from worker.dispatcher import dispatch_once

DONE = ("succeeded", "failed", "cancelled")


def test_a_dispatched_job_succeeds(deployment: Deployment, worker: WorkerProcess) -> None:
    dep = deployment
    job_id = insert_job(dep.db_url, TINY)
    assert dispatch_once(dep.db_url, dep.publish) >= 1
    job = wait_status(dep.db_url, job_id, DONE)
    assert job.status == "succeeded", job.error
    assert job.attempt == 1 and job.error is None and job.finished_at is not None
    assert job.report is not None and job.report["student"]["test_top1"] >= 0
    assert job.progress is not None and job.progress["fraction"] == 1.0
    assert job.lease_owner is not None and job.lease_owner.startswith("distillery-any@")

    with session_scope(dep.db_url) as session:
        stages = set(session.scalars(select(Metric.stage).where(Metric.job_id == job_id)))
        artifacts = list(session.scalars(select(Artifact).where(Artifact.job_id == job_id)))
    assert stages == {"teacher", "baseline", "student", "student.plain"}
    assert {a.name for a in artifacts} == set(job.report["artifacts"])
    assert len({a.filename for a in artifacts}) == len(artifacts)
    store = open_store(dep.settings.artifacts_location)
    for artifact in artifacts:
        with store.open(artifact.location) as f:
            data = f.read()
        assert len(data) == artifact.size
        assert hashlib.sha256(data).hexdigest() == artifact.sha256
    assert Path(dep.settings.work_path / job_id / "report.json").exists()


def test_a_duplicate_delivery_runs_the_job_once(deployment: Deployment, worker: WorkerProcess) -> None:
    dep = deployment
    job_id = insert_job(dep.db_url, TINY)
    dep.hand(job_id)
    dep.publish(job_id, worker.node)  # e.g. a republish, or a broker redelivery
    job = wait_status(dep.db_url, job_id, DONE)
    assert job.status == "succeeded", job.error
    wait_until(lambda: worker.log().count(f"job {job_id}: nothing to claim") == 1, 30, "the second delivery")
    job = get_job(dep.db_url, job_id)
    assert job.status == "succeeded" and job.attempt == 1
    assert claims(dep.db_url, job_id) == 1


def test_cancelling_a_running_job(deployment: Deployment, worker: WorkerProcess) -> None:
    dep = deployment
    job_id = insert_job(dep.db_url, SLOW)
    dep.hand(job_id)
    wait_status(dep.db_url, job_id, ("running",), timeout=60)
    with session_scope(dep.db_url) as session:
        request_cancel(session, job_id, actor="tester")
    job = wait_status(dep.db_url, job_id, DONE, timeout=10)
    assert job.status == "cancelled"
    assert job.error is not None and job.error["type"] == "cancelled"
    assert job.finished_at is not None
    # the job shows where the run stopped, not the last of the sink's periodic progress saves
    progress = job.progress
    assert progress is not None
    with session_scope(dep.db_url) as session:
        epochs = session.scalars(
            select(Metric.epoch).where(Metric.job_id == job_id, Metric.stage == progress["stage"])
        ).all()
    assert progress["epoch"] >= max(epochs, default=0)


def test_a_bad_stored_spec_fails_as_bad_spec(deployment: Deployment, worker: WorkerProcess) -> None:
    dep = deployment
    with session_scope(dep.db_url) as session:  # written by an older API, say: the worker checks again
        job = Job(name="bad", spec={"student": {"model": {"kind": "no-such-model"}}}, queue="any")
        session.add(job)
        session.flush()
        job_id = job.id
    dep.hand(job_id)
    job = wait_status(dep.db_url, job_id, DONE, timeout=30)
    assert job.status == "failed"
    assert job.error is not None and job.error["type"] == "bad_spec"
    assert "no-such-model" in job.error["message"]


def test_a_diverging_job_fails_as_diverged(deployment: Deployment, worker: WorkerProcess) -> None:
    dep = deployment
    teacher = {**TINY["teacher"], "train": {"epochs": 2, "optimizer": {"kind": "sgd", "lr": 1e30}}}
    job_id = insert_job(dep.db_url, {**TINY, "teacher": teacher})
    dep.hand(job_id)
    job = wait_status(dep.db_url, job_id, DONE)
    assert job.status == "failed"
    assert job.error is not None and job.error["type"] == "diverged", job.error


def test_a_worker_can_run_the_dispatcher(deployment: Deployment, tmp_path: Path) -> None:
    """``python -m worker --dispatcher``: jobs nobody published still reach a worker."""
    dep = deployment
    with session_scope(dep.db_url) as session:  # fails before the engine is even imported: quick
        job = Job(name="bad", spec={"seed": "not a number"}, queue="any")
        session.add(job)
        session.flush()
        job_id = job.id
    helper = WorkerProcess(
        dep, tmp_path / "dispatching.log", "--dispatcher", "--hostname", "helper"
    ).wait_ready()
    try:
        job = wait_status(dep.db_url, job_id, DONE, timeout=30)
    finally:
        helper.stop()
    assert job.published_at is not None
    assert job.error is not None and job.error["type"] == "bad_spec"


def test_an_attempt_past_its_time_limit_fails_as_timeout(deployment: Deployment, tmp_path: Path) -> None:
    if deployment.name != "embedded":
        pytest.skip("the time limit is the worker's own: one deployment shows it")
    dep = deployment
    limited = Deployment(
        dep.name,
        dep.settings.model_copy(update={"task_time_limit_s": 8}),
        {**dep.env, "DISTILLERY_TASK_TIME_LIMIT_S": "8"},
    )
    # placed on a host of its own, so that the module's worker (no limit to speak of) cannot take it
    job_id = insert_job(dep.db_url, SLOW, queue="limited")
    helper = WorkerProcess(limited, tmp_path / "limited.log", "--gpu-type", "limited", "--hostname", "lim")
    try:
        helper.wait_ready()
        dep.hand(job_id, helper.node)
        job = wait_status(dep.db_url, job_id, DONE, timeout=40)
    finally:
        helper.stop()
    assert job.status == "failed"
    assert job.error is not None and job.error["type"] == "timeout", job.error

"""A worker killed mid-training (SIGKILL): the reaper, the dispatcher and a new worker finish the job.

The new attempt resumes from the last epoch checkpoint in the job's working directory, and the
epochs it replays overwrite their metric rows instead of adding new ones.
"""

from __future__ import annotations

import re
import signal

import pytest
from sqlalchemy import func, select

from store.db import session_scope
from store.models import Metric
from tests.worker.support import (
    SLOW,
    Deployment,
    WorkerProcess,
    claims,
    events,
    get_job,
    insert_job,
    metric_keys,
    wait_status,
    wait_until,
    with_epochs,
)
from worker.dispatcher import dispatch_once, reap_once

EPOCHS = 12
RESUMED = re.compile(r"^resumed .*after epoch (\d+)")  # the trainer's log line


def student_epochs(db_url: str, job_id: str) -> int:
    with session_scope(db_url) as session:
        stmt = select(func.max(Metric.epoch)).where(Metric.job_id == job_id, Metric.stage == "student")
        return int(session.scalar(stmt) or 0)


def test_a_killed_worker_s_job_resumes_on_a_new_worker(
    deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> None:
    dep = deployment
    logs = tmp_path_factory.mktemp("resume-logs")
    job_id = insert_job(dep.db_url, with_epochs(SLOW, EPOCHS))
    first = WorkerProcess(dep, logs / "first.log").wait_ready()
    try:
        assert dispatch_once(dep.db_url, dep.publish) == 1
        wait_until(lambda: student_epochs(dep.db_url, job_id) >= 3, 60, "three student epochs")
        first.kill(signal.SIGKILL)  # the parent and the training child, without any clean-up
        first.proc.wait(timeout=10)
    finally:
        first.stop()
    lost = get_job(dep.db_url, job_id)
    assert lost.status == "running" and lost.attempt == 1
    done_before = student_epochs(dep.db_url, job_id)
    assert done_before < EPOCHS

    # nothing renews the lease any more: once it expires the reaper sends the job back
    wait_until(lambda: job_id in reap_once(dep.db_url), dep.settings.lease_s + 10, "the reaper")
    assert get_job(dep.db_url, job_id).status == "retrying"
    assert dispatch_once(dep.db_url, dep.publish) == 1
    assert get_job(dep.db_url, job_id).status == "queued"

    second = WorkerProcess(dep, logs / "second.log").wait_ready()
    try:
        job = wait_status(dep.db_url, job_id, ("succeeded", "failed", "cancelled"), timeout=90)
    finally:
        second.stop()
    assert job.status == "succeeded", (job.error, second.log()[-3000:])
    assert job.attempt == 2
    assert claims(dep.db_url, job_id) == 2
    resumed = [m for e in events(dep.db_url, job_id, "log") if (m := RESUMED.search(e.message))]
    assert resumed, "the second attempt did not resume from a checkpoint"
    assert int(resumed[-1].group(1)) >= done_before - 1  # at most the epoch in flight is lost
    rows, keys = metric_keys(dep.db_url, job_id)
    assert rows == keys
    assert student_epochs(dep.db_url, job_id) == EPOCHS

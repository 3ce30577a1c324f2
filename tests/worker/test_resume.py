"""A worker killed mid-training (SIGKILL): the reaper, the dispatcher and a new worker finish the job.

The new attempt resumes from the newest checkpoint in the job's working directory: the last
epoch's, or, killed inside a long epoch, the step checkpoint taken in it. The epochs it replays
overwrite their metric rows instead of adding new ones, and a job resumed from a step checkpoint
ends with the student weights, bit for bit, of the same spec run through without a kill (CPU,
fixed seed, the same worker and so the same thread count).
"""

from __future__ import annotations

import re
import signal

import pytest
import torch
from sqlalchemy import func, select

from core.models.io import read_weights
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
RESUMED_INSIDE = re.compile(r"^resumed student in epoch 1, after step (\d+) of (\d+)")
# Two long student epochs (1,500 steps of batch 2, a few seconds each) with a step checkpoint
# every half second.
LONG_EPOCHS = {
    **SLOW,
    "student": {"model": {"kind": "mlp", "hidden": [128]}},
    "distill": {"epochs": 2, "batch_size": 2},
    "runtime": {**SLOW["runtime"], "checkpoint_every_s": 0.5},
}


def student_epochs(db_url: str, job_id: str) -> int:
    with session_scope(db_url) as session:
        stmt = select(func.max(Metric.epoch)).where(Metric.job_id == job_id, Metric.stage == "student")
        return int(session.scalar(stmt) or 0)


def student_weights(dep: Deployment, job_id: str) -> dict[str, torch.Tensor]:
    """The student stage's final weights, as the job's working directory keeps them."""
    path = dep.settings.work_path / job_id / "stages" / "student" / "model.safetensors"
    return read_weights(path)[0]


def weight_differences(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    """The tensors that are not bit-identical, with their largest difference: empty if none."""
    if a.keys() != b.keys():
        return [f"different tensors: {sorted(a)} != {sorted(b)}"]
    return [
        f"{key}: max |diff| {(a[key].double() - b[key].double()).abs().max().item():.3g}"
        for key in sorted(a)
        if not torch.equal(a[key], b[key])
    ]


def _requeue(dep: Deployment, job_id: str) -> None:
    """What happens after a worker dies: its lease expires, the reaper and the dispatcher requeue."""
    wait_until(lambda: job_id in reap_once(dep.db_url), dep.settings.lease_s + 10, "the reaper")
    assert get_job(dep.db_url, job_id).status == "retrying"
    assert dispatch_once(dep.db_url, dep.publish) == 1


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
    _requeue(dep, job_id)
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


def test_a_worker_killed_inside_an_epoch_resumes_from_its_step_checkpoint(
    deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> None:
    dep = deployment
    logs = tmp_path_factory.mktemp("resume-step-logs")
    job_id = insert_job(dep.db_url, LONG_EPOCHS)
    step_ckpt = dep.settings.work_path / job_id / "stages" / "student" / "ckpt" / "step.pt"
    first = WorkerProcess(dep, logs / "first.log").wait_ready()
    try:
        assert dispatch_once(dep.db_url, dep.publish) == 1
        wait_until(step_ckpt.exists, 90, "a step checkpoint inside the student's first epoch")
        first.kill(signal.SIGKILL)
        first.proc.wait(timeout=10)
    finally:
        first.stop()
    assert student_epochs(dep.db_url, job_id) == 0  # no student epoch had ended
    _requeue(dep, job_id)

    second = WorkerProcess(dep, logs / "second.log").wait_ready()
    try:
        job = wait_status(dep.db_url, job_id, ("succeeded", "failed", "cancelled"), timeout=120)
        assert job.status == "succeeded", (job.error, second.log()[-3000:])
        # the same spec (seed included) run through without a kill, as a job of its own (its own
        # working directory), by the same kind of worker: the reference the resumed job must match
        whole_id = insert_job(dep.db_url, LONG_EPOCHS)
        assert dispatch_once(dep.db_url, dep.publish) == 1
        whole = wait_status(dep.db_url, whole_id, ("succeeded", "failed", "cancelled"), timeout=120)
        assert whole.status == "succeeded", (whole.error, second.log()[-3000:])
    finally:
        second.stop()
    assert job.attempt == 2
    resumed = [m for e in events(dep.db_url, job_id, "log") if (m := RESUMED_INSIDE.search(e.message))]
    assert resumed, "the second attempt did not resume inside the epoch"
    step, steps = int(resumed[-1].group(1)), int(resumed[-1].group(2))
    assert 0 < step < steps == 1500
    assert student_epochs(dep.db_url, job_id) == 2
    assert not step_ckpt.exists()
    # the resumed job ends with the uninterrupted run's student, bit for bit (CPU, fixed seed)
    assert whole.attempt == 1
    assert not [e for e in events(dep.db_url, whole_id, "log") if e.message.startswith("resumed")]
    differences = weight_differences(student_weights(dep, job_id), student_weights(dep, whole_id))
    assert not differences, f"resumed vs uninterrupted student weights differ: {differences}"

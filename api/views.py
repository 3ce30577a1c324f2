"""Database rows to response bodies."""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy.orm import Session

from api.schemas import (
    ArtifactOut,
    EventOut,
    JobError,
    JobLinks,
    JobOut,
    JobResult,
    JobSummary,
    MetricOut,
    Placement,
    Priority,
    Waiting,
)
from core.errors import DistilleryError
from core.report_model import Report
from domain.jobs import queue_place
from store.models import Artifact, Job, JobEvent, Metric
from store.scheduler import Wait


def priority_name(value: int) -> Priority:
    """The spec's name for a stored priority (``store.models.PRIORITIES``)."""
    return "low" if value < 0 else "high" if value > 0 else "normal"


def job_path(job_id: str) -> str:
    return f"/v1/jobs/{job_id}"


def etag(job: Job) -> str:
    return f'"{job.version}"'


def _error(value: dict[str, Any] | None) -> JobError | None:
    if value is None:
        return None
    kind = value.get("type", DistilleryError.type)  # a row written without one: an internal error
    return JobError(type=str(kind), message=str(value.get("message", "")))


def job_result(report: Report | dict[str, Any] | None) -> JobResult | None:
    """The headline numbers of a report, built or as the database stores it (a dict)."""
    if not report:
        return None
    typed = report if isinstance(report, Report) else Report.model_validate(report)
    return JobResult(
        student_top1=typed.student.test_top1,
        baseline_top1=typed.baseline.test_top1 if typed.baseline is not None else None,
        teacher_top1=typed.teacher.test_top1,
        kd_gain=typed.kd_gain,
        kd_gain_stderr=typed.kd_gain_stderr,
        best_epoch=typed.student.best_epoch,
    )


def _placement(job: Job) -> Placement | None:
    if job.placed_on is None or job.devices is None:
        return None
    return Placement(worker=job.placed_on, devices=list(job.devices))


def _summary_fields(job: Job, wait: Wait | None) -> dict[str, Any]:
    path = job_path(job.id)
    return dict(
        id=job.id,
        name=job.name,
        status=job.status,
        attempt=job.attempt,
        max_attempts=job.max_attempts,
        queue=job.queue,
        gpus=job.gpus,
        placement=_placement(job),
        priority=priority_name(job.priority),
        queue_position=wait.position if wait else None,
        waiting=Waiting(position=wait.position, reason=wait.reason, message=wait.message) if wait else None,
        progress=job.progress,
        error=_error(job.error),
        result=job_result(job.report),
        owner=job.owner,
        team=job.team,
        version=job.version,
        created_at=job.created_at,
        updated_at=job.updated_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        links=JobLinks(
            self=path, metrics=f"{path}/metrics", artifacts=f"{path}/artifacts", events=f"{path}/events"
        ),
    )


def job_out(session: Session, job: Job, *, wait: Wait | None = None, known: bool = False) -> JobOut:
    """``wait`` may be precomputed (``known``) for a page of jobs; else it is queried."""
    if not known:
        wait = queue_place(session, job)
    return JobOut(**_summary_fields(job, wait), report=job.report, spec=job.spec)


def job_summary(job: Job, wait: Wait | None) -> JobSummary:
    return JobSummary(**_summary_fields(job, wait))


def metric_out(row: Metric | Any) -> MetricOut:
    value = row.value if row.value is not None and math.isfinite(row.value) else None
    return MetricOut(id=row.id, stage=row.stage, epoch=row.epoch, step=row.step, name=row.name, value=value)


def event_out(row: JobEvent) -> EventOut:
    return EventOut(
        id=row.id,
        at=row.at,
        kind=row.kind,
        from_status=row.from_status,
        to_status=row.to_status,
        message=row.message,
        actor=row.actor,
    )


def artifact_out(row: Artifact) -> ArtifactOut:
    return ArtifactOut(
        id=row.id,
        name=row.name,
        filename=row.filename,
        size=row.size,
        sha256=row.sha256,
        url=f"/v1/artifacts/{row.id}",
        created_at=row.created_at,
    )

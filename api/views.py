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
    Priority,
    Waiting,
)
from store.models import Artifact, Job, JobEvent, Metric
from store.scheduler import Wait, waits

PRIORITIES: dict[str, int] = {"low": -1, "normal": 0, "high": 1}


def priority_name(value: int) -> Priority:
    return "low" if value < 0 else "high" if value > 0 else "normal"


def job_path(job_id: str) -> str:
    return f"/v1/jobs/{job_id}"


def etag(job: Job) -> str:
    return f'"{job.version}"'


def _error(value: dict[str, Any] | None) -> JobError | None:
    if value is None:
        return None
    return JobError(type=str(value.get("type", "internal")), message=str(value.get("message", "")))


def job_result(report: dict[str, Any] | None) -> JobResult | None:
    if not report:
        return None

    def top1(stage: str) -> float | None:
        info = report.get(stage)
        return _number(info.get("test_top1")) if isinstance(info, dict) else None

    student = report.get("student")
    best = student.get("best_epoch") if isinstance(student, dict) else None
    return JobResult(
        student_top1=top1("student"),
        baseline_top1=top1("baseline"),
        teacher_top1=top1("teacher"),
        kd_gain=_number(report.get("kd_gain")),
        kd_gain_stderr=_number(report.get("kd_gain_stderr")),
        best_epoch=best if isinstance(best, int) and not isinstance(best, bool) else None,
    )


def _number(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _summary_fields(job: Job, wait: Wait | None) -> dict[str, Any]:
    path = job_path(job.id)
    return dict(
        id=job.id,
        name=job.name,
        status=job.status,
        attempt=job.attempt,
        max_attempts=job.max_attempts,
        queue=job.queue,
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
        wait = waits(session, [job]).get(job.id)
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

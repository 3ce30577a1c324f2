"""Database rows to response bodies."""

from __future__ import annotations

import logging
import math
import zlib
from typing import Any

from pydantic import ValidationError
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

log = logging.getLogger(__name__)


def priority_name(value: int) -> Priority:
    """The spec's name for a stored priority (``store.models.PRIORITIES``)."""
    return "low" if value < 0 else "high" if value > 0 else "normal"


def job_path(job_id: str) -> str:
    return f"/v1/jobs/{job_id}"


def etag(version: int, wait: Wait | Waiting | None = None) -> str:
    """A job's ETag: its version and, while it waits, its place, which moves at a dispatcher pass
    without a new version (``store.places``)."""
    if wait is None:
        return f'"{version}"'
    place = zlib.crc32(f"{wait.position}|{wait.reason}|{wait.message}".encode())
    return f'"{version}.{place:08x}"'


def _error(value: dict[str, Any] | None) -> JobError | None:
    if value is None:
        return None
    kind = value.get("type", DistilleryError.type)  # a row written without one: an internal error
    return JobError(type=str(kind), message=str(value.get("message", "")))


def stored_report(job: Job) -> Report | None:
    """The job's report as the database stores it, typed; ``None`` (and a warning in the log) for
    one the report model no longer reads, so that a bad row costs its report, not a 500 on every
    list and read that shows the job."""
    if not job.report:
        return None
    try:
        return Report.model_validate(job.report)
    except ValidationError as e:
        log.warning("job %s: its stored report does not validate, shown without it: %s", job.id, e)
        return None


def job_result(report: Report | None) -> JobResult | None:
    """The headline numbers of a report."""
    if report is None:
        return None
    return JobResult(
        student_top1=report.student.test_top1,
        baseline_top1=report.baseline.test_top1 if report.baseline is not None else None,
        teacher_top1=report.teacher.test_top1,
        kd_gain=report.kd_gain,
        kd_gain_stderr=report.kd_gain_stderr,
        best_epoch=report.student.best_epoch,
    )


def _placement(job: Job) -> Placement | None:
    if job.placed_on is None or job.devices is None:
        return None
    return Placement(worker=job.placed_on, devices=list(job.devices))


def _summary_fields(job: Job, wait: Wait | None, report: Report | None) -> dict[str, Any]:
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
        result=job_result(report),
        owner=job.owner,
        team=job.team,
        sweep=job.sweep_id,
        trial=job.trial,
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
    report = stored_report(job)
    return JobOut(**_summary_fields(job, wait, report), report=report, spec=job.spec)


def job_summary(job: Job, wait: Wait | None) -> JobSummary:
    return JobSummary(**_summary_fields(job, wait, stored_report(job)))


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

"""``teacher.from_job``: a job reuses the teacher another job of its team trained.

At submission the teacher is filled in from that job's spec (its model, training and data), so
the stored spec says what the teacher is and the engine builds the right architecture; the
worker then puts the kept weights in place (``worker.stages``). The job must be the caller's
team's, not deleted, and keep a trained teacher: otherwise a 422 names the field. The kept
stages' lifetime (a stage lives while a job that is not deleted uses it) is ``store.stages``'s.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from core.errors import FieldIssue, InvalidDocumentError
from core.spec import JobSpec, TeacherSpec
from store import stages as kept
from store.identity import Caller
from store.models import Job

_FILLED = ("model", "train", "data", "checkpoint")  # what from_job fills in; given alongside it, must agree


def resolve_teachers(session: Session, caller: Caller, spec: JobSpec) -> JobSpec:
    """``spec`` with each ``from_job`` teacher filled in from the job that trained it."""
    teachers, issues, changed = [], [], False
    for i, tspec in enumerate(spec.all_teachers):
        field = "teacher" if i == 0 else f"teachers.{i - 1}"
        if tspec.from_job is None:
            teachers.append(tspec)
            continue
        filled, problem = _fill(session, caller, spec, tspec, field)
        if problem is not None:
            issues.append(problem)
        teachers.append(filled)
        changed = True
    if issues:
        raise InvalidDocumentError("spec", issues)
    if not changed:
        return spec
    data = spec.model_dump(mode="json")
    data["teacher"] = teachers[0].model_dump(mode="json")
    data["teachers"] = [t.model_dump(mode="json") for t in teachers[1:]]
    return JobSpec.model_validate(data)


def _fill(
    session: Session, caller: Caller, spec: JobSpec, tspec: TeacherSpec, field: str
) -> tuple[TeacherSpec, FieldIssue | None]:
    source_id = tspec.from_job
    assert source_id is not None
    source = session.get(Job, source_id)
    if source is None or source.deleted_at is not None or not caller.sees(source.team):
        return tspec, FieldIssue(f"{field}.from_job", f"no job {source_id} in your team")
    if kept.used_by(session, source_id, "teacher") is None:
        return tspec, FieldIssue(
            f"{field}.from_job",
            f"job {source_id} keeps no trained teacher (it was given one, or has not finished training it)",
        )
    source_spec = JobSpec.model_validate(source.spec)
    teacher: dict[str, Any] = source_spec.teacher.model_dump(mode="json")
    if source_spec.teacher.data is None and source_spec.data != spec.data:
        teacher["data"] = source_spec.data.model_dump(mode="json")  # what it was trained on
    teacher["from_job"] = source_id
    filled = TeacherSpec.model_validate(teacher)
    given = tspec.model_fields_set & set(_FILLED)
    differs = [name for name in sorted(given) if getattr(tspec, name) != getattr(filled, name)]
    if differs:
        names = ", ".join(f"{field}.{name}" for name in differs)
        return tspec, FieldIssue(
            f"{field}.{differs[0]}",
            f"{names}: differs from the teacher of job {source_id}, which from_job reuses; leave it out",
        )
    return filled, None

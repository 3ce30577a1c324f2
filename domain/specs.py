"""What a valid spec must also pass to be stored: the uploads it names are its team's, and its
estimated cost is within the service's limits (``core.estimate``): a spec is refused before it is
stored, not after it has held a GPU. ``POST /v1/jobs`` and ``POST /v1/spec/validate`` run the
same checks (``check_spec``); ``api.validation`` has already turned the body into a ``JobSpec``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from core.errors import FieldIssue, InvalidDocumentError
from core.estimate import Limits, check_limits, estimate
from core.paths import named_uploads, normal
from core.spec import JobSpec, NpzData
from domain.stages import resolve_teachers
from store.identity import Caller
from store.jobs import uploads_at
from store.models import Upload
from store.settings import Settings


def check_spec(session: Session, caller: Caller, spec: JobSpec, settings: Settings) -> JobSpec:
    """The spec to store: each ``teacher.from_job`` filled in from that job's teacher
    (``domain.stages``). A 422 (``invalid-spec``) naming each field that names an upload the caller
    may not use, or a job whose teacher it cannot reuse, or else each field whose estimated cost
    is over the limits."""
    spec = resolve_teachers(session, caller, spec)
    named = list(named_uploads(spec.model_dump(mode="json")))
    archives, models = _named_files(spec)
    uploads = uploads_at(session, {normal(p) for p in [*(p for _f, p in named), *archives, *models]})
    missing = [
        FieldIssue(field, f"no upload {path!r} (upload it first)")
        for field, path in named
        if (upload := uploads.get(normal(path))) is None or not caller.sees(upload.team)
    ]
    if missing:  # another team's upload is as absent as a missing one
        raise InvalidDocumentError("spec", missing)
    check_resources(spec, settings, uploads)
    return spec


def limits_of(settings: Settings) -> Limits:
    return Limits(
        max_params=settings.max_params,
        max_job_memory=settings.max_job_memory,
        max_dataset_bytes=settings.max_dataset_bytes,
        max_epoch_work=settings.max_epoch_work,
    )


def _named_files(spec: JobSpec) -> tuple[list[str], list[str]]:
    """The archive paths (npz datasets) and teacher file paths (TorchScript and the like) a spec names."""
    datasets = [spec.data, spec.distill.transfer.unlabelled]
    datasets += [t.data for t in spec.all_teachers]
    datasets += [getattr(loss, "source", None) for loss in spec.distill.losses]
    archives = [d.path for d in datasets if isinstance(d, NpzData)]
    models = [path for t in spec.all_teachers if isinstance(path := getattr(t.model, "path", None), str)]
    return archives, models


def check_resources(spec: JobSpec, settings: Settings, uploads: Mapping[str, Upload] | None = None) -> None:
    """A 422 naming each field whose estimated cost is over the service's limits. ``uploads`` (by
    normalized path) lend the estimate the shapes of the archives and the sizes of the teacher
    files the spec names."""
    archives, models = _named_files(spec)
    found = {p: row for p in archives + models if uploads and (row := uploads.get(normal(p)))}
    shapes: dict[str, dict[str, Any]] = {
        p: row.details for p in archives if (row := found.get(p)) and row.details
    }
    sizes = {p: row.size for p in models if (row := found.get(p))}
    violations = check_limits(estimate(spec, uploads=shapes, files=sizes), limits_of(settings))
    if violations:
        raise InvalidDocumentError("spec", [FieldIssue(v.field, v.message) for v in violations])

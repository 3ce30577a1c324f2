"""One error tree for the engine and the service (DESIGN.md §9).

Every error raised on purpose is a ``DistilleryError``. Its class owns two things:

- ``type``, a stable code. For the engine's errors it is what a failed job records in
  ``error.type`` (``bad_spec``, ``out_of_memory``, ...; DESIGN.md §4); for the service's it is the
  last part of the problem document's ``type`` (``urn:distillery:problem:not-found``).
- ``status``, the HTTP status the API answers when the error reaches a request.

``api.problems`` turns any of them into ``application/problem+json`` in one place: routes,
the jobs domain and the store raise these and never build a response. An instance may carry
``errors`` (one ``FieldIssue`` per offending field) and ``headers`` (``Retry-After``, say).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class FieldIssue:
    """One offending field of a request: ``distill.losses.0.temperature``, ``Idempotency-Key``."""

    field: str
    message: str


class DistilleryError(Exception):
    """Base of every error raised on purpose, by the engine or the service."""

    type: str = "internal"  # a few classes set theirs per instance (QuotaExceededError)
    status: int = 500
    title: ClassVar[str | None] = None  # None: the HTTP phrase of ``status``

    def __init__(
        self,
        message: str = "",
        *,
        errors: Sequence[FieldIssue] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.errors = tuple(errors)
        self.headers = dict(headers or {})


# ---------------------------------------------------------------- how a job fails (error.type)


class SpecError(DistilleryError):
    """The job spec is invalid or asks for something that cannot be built."""

    type = "bad_spec"
    status = 422


class DataMissingError(DistilleryError):
    """A dataset or checkpoint the spec names is not where it should be."""

    type = "data_missing"
    status = 422


class DivergedError(DistilleryError):
    """Training produced a NaN or infinite loss."""

    type = "diverged"


class OutOfMemoryError(DistilleryError):
    """The device ran out of memory."""

    type = "out_of_memory"


class CancelledError(DistilleryError):
    """The sink asked the run to stop."""

    type = "cancelled"


class UnsafeModelError(DistilleryError):
    """A model file calls an operator outside the allowlist of pure tensor operators (core.opcheck)."""

    type = "unsafe_model"
    status = 422


class WorkerLostError(DistilleryError):
    """The worker running the job stopped renewing its lease, and no attempt is left."""

    type = "worker_lost"


class JobTimeoutError(DistilleryError):
    """An attempt ran past its time limit."""

    type = "timeout"


class SandboxUnavailableError(DistilleryError):
    """The settings require confining the engine, and this kernel cannot."""

    type = "sandbox_unavailable"


# ---------------------------------------------------------------- what a request is refused for


class NotFoundError(DistilleryError):
    """No such job, upload, team, user, token or artifact; or one the caller may not see."""

    type = "not-found"
    status = 404

    def __init__(self, what: str, ident: str) -> None:
        super().__init__(f"{what} {ident!r} does not exist")
        self.what, self.ident = what, ident


class ConflictError(DistilleryError):
    """The current state of what the request names does not allow it."""

    type = "conflict"
    status = 409


class AlreadyExistsError(ConflictError):
    type = "exists"


class JobFinishedError(ConflictError):
    """Cancelling a job that has ended."""

    type = "job-finished"


class JobLiveError(ConflictError):
    """Deleting a job that has not ended."""

    type = "job-live"


class QuotaExceededError(ConflictError):
    """A team limit refuses the request; ``type`` names which (set per instance)."""

    QUEUE_FULL: ClassVar[str] = "team-queue-full"
    STORAGE: ClassVar[str] = "storage-quota-exceeded"

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.type = kind


class InvalidRequestError(DistilleryError):
    """A request whose fields are wrong, each named in ``errors``."""

    type = "invalid-request"
    status = 422

    @classmethod
    def field(cls, name: str, message: str, *, detail: str | None = None) -> InvalidRequestError:
        return cls(detail or f"{name}: {message}", errors=[FieldIssue(name, message)])


class InvalidDocumentError(InvalidRequestError):
    """A document (a spec, an architecture) that fails validation; ``what`` names it."""

    def __init__(self, what: str, errors: Sequence[FieldIssue]) -> None:
        lines = "; ".join(f"{e.field}: {e.message}" for e in errors)
        super().__init__(f"invalid {what}: {lines}", errors=errors)
        self.what = what
        self.type = f"invalid-{what}"


class IdempotencyKeyReusedError(InvalidRequestError):
    type = "idempotency-key-reused"


class InvalidUploadError(InvalidRequestError):
    """An uploaded model or dataset that cannot be used; ``kind`` is ``model`` or ``dataset``."""

    def __init__(self, kind: str, message: str, *, errors: Sequence[FieldIssue] = ()) -> None:
        super().__init__(message, errors=errors)
        self.type = kind


class UnauthorizedError(DistilleryError):
    type = "unauthorized"
    status = 401

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class ForbiddenError(DistilleryError):
    type = "forbidden"
    status = 403


class GoneError(DistilleryError):
    """A record whose file has been removed from the artifact store."""

    type = "artifact-gone"
    status = 410


class TooLargeError(DistilleryError):
    """A body over its limit; ``type`` names which (``spec-too-large``, ``upload-too-large``)."""

    status = 413

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.type = kind


class UnsupportedMediaTypeError(DistilleryError):
    type = "unsupported-media-type"
    status = 415


class TooManyRequestsError(DistilleryError):
    """Over a rate or a concurrency limit; ``Retry-After`` says when to come back."""

    status = 429

    def __init__(self, kind: str, message: str, *, retry_after_s: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})
        self.type = kind


class UnavailableError(DistilleryError):
    """The service cannot answer now (database busy or down, not ready); retry after a while."""

    status = 503

    def __init__(self, kind: str, message: str, *, retry_after_s: int | None = None) -> None:
        headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else None
        super().__init__(message, headers=headers)
        self.type = kind

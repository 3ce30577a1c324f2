"""Database models (SQLAlchemy 2.0, typed). Migrations in ``store/migrations`` create them.

The job row is the source of truth (DESIGN.md §4): the broker only carries job ids.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """Every stored time is UTC, but SQLite hands datetimes back naive: make them comparable."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


# A StrEnum: stored, compared and serialized as the plain strings clients see; its docstring is
# the API schema's description, the members' order its enum's. ``domain.lifecycle`` moves jobs.
class JobStatus(StrEnum):
    """Where a job stands: queued → starting → running → succeeded | failed. A cancelled job went
    through cancelling if it had started; one whose worker was lost goes retrying → queued while
    attempts remain. A sweep's trial that its pruner stopped early ends pruned."""

    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    RETRYING = "retrying"
    PRUNED = "pruned"  # a sweep's trial stopped early by its pruner (``domain.sweeps``)


LIVE = (JobStatus.QUEUED, JobStatus.STARTING, JobStatus.RUNNING, JobStatus.CANCELLING, JobStatus.RETRYING)
TERMINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.PRUNED)  # never left
STATUSES = (*LIVE, *TERMINAL)
WAITING = (JobStatus.QUEUED, JobStatus.RETRYING)  # for a GPU, dispatched or not: the team's queue
HELD = (JobStatus.STARTING, JobStatus.RUNNING, JobStatus.CANCELLING)  # a worker holds the lease, and a slot
OWNED = (JobStatus.STARTING, JobStatus.RUNNING)  # a worker may still work; a cancelling job ends cancelled

# How ``Job.priority`` stores the spec's priority names: higher runs first.
PRIORITIES: dict[str, int] = {"low": -1, "normal": 0, "high": 1}

# The same VARCHAR(16) as ever (no CHECK constraint, no native enum): rows read back as members.
_STATUS = Enum(
    JobStatus,
    native_enum=False,
    create_constraint=False,
    length=16,
    values_callable=lambda members: [m.value for m in members],
    validate_strings=True,
)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), index=True)
    owner: Mapped[str] = mapped_column(String(100), default="anonymous", index=True)
    team: Mapped[str | None] = mapped_column(String(100), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[JobStatus] = mapped_column(_STATUS, default=JobStatus.QUEUED, index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    queue: Mapped[str] = mapped_column(String(64), default="any")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    # The spec's resources.gpus: the job holds max(1, gpus) slots of one host (store.scheduler).
    gpus: Mapped[int] = mapped_column(Integer, default=1)
    # Where the scheduler placed it: a worker host (its id) and the device indices it holds there.
    # Set when it is handed over, cleared when it goes back to waiting, kept once it has ended.
    placed_on: Mapped[str | None] = mapped_column(String(200))
    devices: Mapped[list[int] | None] = mapped_column(JSON)
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer, default=1)  # bumped on every change: the ETag
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A deleted job keeps its row and its events (the audit trail); its metrics and artifacts go.
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A sweep's trial: the sweep and the Optuna trial number (``domain.sweeps``); else both None.
    sweep_id: Mapped[str | None] = mapped_column(ForeignKey("sweeps.id"), index=True)
    trial: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        Index("ix_jobs_status_published", "status", "published_at"),
        Index("ix_jobs_team_created_id", "team", "created_at", "id"),  # a team's list, newest first
    )


class JobEvent(Base):
    """A state change or a notable moment of a job (also the audit trail)."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))  # status, log, artifact, ...
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str | None] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str | None] = mapped_column(String(200))


class Metric(Base):
    """One value of one epoch of one stage. Unique, so a replayed epoch never duplicates rows."""

    __tablename__ = "metrics"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    stage: Mapped[str] = mapped_column(String(32))
    epoch: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(100))
    value: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        UniqueConstraint("job_id", "stage", "epoch", "step", "name", name="uq_metrics_key"),
        Index("ix_metrics_job_id_id", "job_id", "id"),
    )


class Artifact(Base):
    __tablename__ = "artifacts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))  # the report's artifact key
    filename: Mapped[str] = mapped_column(String(300))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    location: Mapped[str] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (UniqueConstraint("job_id", "name", name="uq_artifacts_job_name"),)


class StageArtifact(Base):
    """A finished teacher or labels-only baseline stage a team reuses (``core.stagekeys``): its
    weights and result in the artifact store, kept while a job refers to it (``StageUse``)."""

    __tablename__ = "stage_artifacts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    team: Mapped[str] = mapped_column(String(100))
    key: Mapped[str] = mapped_column(String(64))
    stage: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[str] = mapped_column(
        String(32)
    )  # the job that trained it; no foreign key: it may go first
    files: Mapped[dict[str, Any]] = mapped_column(JSON)  # filename -> {location, size, sha256}
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (UniqueConstraint("team", "key", name="uq_stage_artifacts_team_key"),)


class StageUse(Base):
    """A job that trained or reused a kept stage; the stage goes when its last user is deleted."""

    __tablename__ = "stage_uses"

    stage_id: Mapped[str] = mapped_column(
        ForeignKey("stage_artifacts.id", ondelete="CASCADE"), primary_key=True
    )
    job_id: Mapped[str] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    owner: Mapped[str] = mapped_column(String(100), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Upload(Base):
    """An uploaded teacher model or dataset, stored under the data root for specs to name."""

    __tablename__ = "uploads"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(16))  # model | dataset
    format: Mapped[str] = mapped_column(String(32))  # torchscript | safetensors | npz
    filename: Mapped[str] = mapped_column(String(300))
    path: Mapped[str] = mapped_column(String(500))  # relative to the data root: what a spec names
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    owner: Mapped[str] = mapped_column(String(100), default="anonymous")
    team: Mapped[str | None] = mapped_column(String(100), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Worker(Base):
    """A worker host of the pool (one Celery worker per machine and GPU type), as its heartbeats
    describe it: ``slots`` jobs' worth of devices, listed with their indices in ``devices``."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # the Celery node name
    host: Mapped[str] = mapped_column(String(200))
    gpu_type: Mapped[str] = mapped_column(String(64))  # the jobs it runs: this type's and any's
    slots: Mapped[int] = mapped_column(Integer, default=1)  # GPUs (--gpus) or CPU slots (--slots)
    devices: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)  # index, name, memory, ...
    status: Mapped[str] = mapped_column(String(16), default="online", index=True)  # online | lost | offline
    current_job_id: Mapped[str | None] = mapped_column(String(32))  # the first job it holds, if any
    idle_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # None while it holds one
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


ROLES = ("admin", "member", "viewer")


class Team(Base):
    """A group of users sharing jobs, uploads and limits. ``None`` limits mean no limit."""

    __tablename__ = "teams"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    max_running: Mapped[int | None] = mapped_column(Integer)
    max_queued: Mapped[int | None] = mapped_column(Integer)
    max_storage_bytes: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class User(Base):
    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    team: Mapped[str] = mapped_column(ForeignKey("teams.name"), index=True)
    role: Mapped[str] = mapped_column(String(16))  # admin | member | viewer
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiToken(Base):
    """A bearer token. Only its SHA-256 is stored: the secret is shown once, when it is made."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user: Mapped[str] = mapped_column(ForeignKey("users.name"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Lock(Base):
    """Named rows to serialize a critical section across processes, on SQLite and PostgreSQL."""

    __tablename__ = "locks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class QueuePlaces(Base):
    """Every waiting job's place and reason, as the last dispatcher pass computed them (one row,
    id 1; ``store.places``). ``serial`` grows with each change: readers cache by it."""

    __tablename__ = "queue_places"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    serial: Mapped[int] = mapped_column(BigInteger)
    digest: Mapped[str] = mapped_column(String(64))
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    places: Mapped[bytes] = mapped_column(LargeBinary)


class JobWrites(Base):
    """On SQLite, how many rows of ``jobs`` were ever inserted, updated or deleted: triggers
    (migration 0009) add one to ``n`` for each, in the writer's transaction. Equal numbers, the
    same jobs: a dispatcher pass that finds the number it last loaded at lists no waiting job
    (``store.scheduler.waiting_sum``). One row, id 1; none on PostgreSQL, which sums a hash."""

    __tablename__ = "job_writes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)


class SweepStatus(StrEnum):
    """A sweep runs while it has trials to start or trials live; it has succeeded once every trial
    ended and one completed, failed if none did, cancelled if asked to."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Sweep(Base):
    """A search over a base spec's parameters: its trials are ordinary jobs (``Job.sweep_id``),
    its search and pruning state an Optuna study (``study``) in the project's database."""

    __tablename__ = "sweeps"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100))
    owner: Mapped[str] = mapped_column(String(100))
    team: Mapped[str | None] = mapped_column(String(100), index=True)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)  # the validated SweepRequest
    study: Mapped[str] = mapped_column(String(100))  # the Optuna study's name: sweep-<id>
    status: Mapped[str] = mapped_column(String(16), default=SweepStatus.RUNNING, index=True)
    message: Mapped[str] = mapped_column(Text, default="")  # why it ended, or what it waits for
    best_job_id: Mapped[str | None] = mapped_column(String(32))
    best_value: Mapped[float | None] = mapped_column(Float)
    version: Mapped[int] = mapped_column(Integer, default=1)  # bumped on every change: the ETag
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

"""What the API returns, as typed models (api/schemas.py is the contract).

Every model accepts and keeps fields it does not know (``extra="allow"``), and nearly every field
has a default: a newer server that adds or drops an optional field does not break this client.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, PrivateAttr

from core.report_model import Report  # torch-free: the engine's own report model

TERMINAL = frozenset({"succeeded", "failed", "cancelled", "pruned"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class Progress(_Model):
    stage: str | None = None
    epoch: int | None = None
    epochs: int | None = None
    fraction: float | None = None
    eta_s: float | None = None


class Waiting(_Model):
    position: int | None = None  # None while the scheduler has not placed it yet
    reason: str | None = None
    message: str = ""

    @property
    def place(self) -> str:
        """``#3``, or ``unplaced`` before the scheduler's next pass has placed the job."""
        return "unplaced" if self.position is None else f"#{self.position}"


class Placement(_Model):
    """The worker host a job was handed to and the device indices it holds there."""

    worker: str
    devices: list[int] = []


class JobError(_Model):
    type: str = "internal"
    message: str = ""


class JobResult(_Model):
    student_top1: float | None = None
    baseline_top1: float | None = None
    teacher_top1: float | None = None
    kd_gain: float | None = None
    kd_gain_stderr: float | None = None
    best_epoch: int | None = None


class Job(_Model):
    id: str
    name: str = ""
    status: str
    attempt: int = 0
    max_attempts: int | None = None
    queue: str | None = None
    gpus: int | None = None
    placement: Placement | None = None
    priority: str | None = None
    queue_position: int | None = None
    waiting: Waiting | None = None
    progress: Progress | None = None
    error: JobError | None = None
    result: JobResult | None = None
    report: Report | None = None
    spec: dict[str, Any] = {}  # not in list pages: `Client.job(id)` reads the whole job
    owner: str | None = None
    team: str | None = None
    sweep: str | None = None  # the sweep it is a trial of
    trial: int | None = None
    version: int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    _etag: str | None = PrivateAttr(default=None)

    @property
    def etag(self) -> str | None:
        """The ``ETag`` it came with: pass it back to ``Client.job`` to poll cheaply."""
        return self._etag

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL


class JobPage(_Model):
    items: list[Job]
    next_cursor: str | None = None


class Metric(_Model):
    id: int | None = None
    stage: str
    epoch: int
    step: int = 0
    name: str
    value: float | None = None


class MetricPage(_Model):
    items: list[Metric]
    next_cursor: str | None = None
    has_more: bool = False


class Event(_Model):
    id: int
    at: datetime | None = None
    kind: str = ""
    from_status: str | None = None
    to_status: str | None = None
    message: str = ""
    actor: str | None = None


class EventPage(_Model):
    items: list[Event]
    next_cursor: str | None = None
    has_more: bool = False


Row = TypeVar("Row", Metric, Event)


class RowPage(Protocol[Row]):
    """A page of rows after a cursor: metrics and events."""

    items: list[Row]
    next_cursor: str | None
    has_more: bool


def drain(fetch: Callable[[str | None], RowPage[Row]], after: str | None) -> tuple[list[Row], str | None]:
    """Every row after the cursor ``after``, page by page, and the cursor to read on from."""
    rows: list[Row] = []
    while True:
        page = fetch(after)
        rows += page.items
        after = page.next_cursor or after
        if not page.has_more:
            return rows, after


class Artifact(_Model):
    id: str
    name: str
    filename: str
    size: int
    sha256: str
    url: str


class Upload(_Model):
    id: str
    kind: str
    format: str = ""
    filename: str = ""
    path: str
    size: int = 0
    sha256: str = ""
    spec_fragment: dict[str, Any] = {}


class Me(_Model):
    user: str
    team: str | None = None
    role: str | None = None
    token_id: str | None = None


class PoolJob(_Model):
    id: str | None = None
    name: str | None = None
    owner: str | None = None
    team: str | None = None
    status: str = ""
    progress: Progress | None = None
    gpus: int | None = None
    devices: list[int] | None = None


class Worker(_Model):
    id: str
    host: str = ""
    gpu_type: str = ""
    status: str = ""
    slots: int | None = None
    free_slots: int | None = None
    devices: list[dict[str, Any]] = []
    last_heartbeat_at: datetime | None = None
    job: PoolJob | None = None
    jobs: list[PoolJob] = []


class QueueCount(_Model):
    queued: int = 0
    running: int = 0


class TeamQueue(QueueCount):
    team: str


class GpuQueue(QueueCount):
    queue: str


class Pool(_Model):
    workers: list[Worker] = []
    teams: list[TeamQueue] = []
    queues: list[GpuQueue] = []


class Trial(_Model):
    """One trial of a sweep: a job with the parameter values it was given."""

    number: int
    job_id: str | None = None
    params: dict[str, Any] = {}
    status: str = "queued"
    objective: float | None = None
    pruned_at_epoch: int | None = None
    error: str | None = None


class Sweep(_Model):
    """A sweep; ``trials``, ``best`` and ``importances`` only from ``Client.sweep`` (not the list)."""

    id: str
    name: str = ""
    status: str = "running"
    message: str = ""
    method: str = "grid"
    objective: dict[str, Any] = {}
    early_stopping: dict[str, Any] = {}
    max_trials: int = 0
    max_concurrent: int = 1
    trials_by_status: dict[str, int] = {}
    best_job_id: str | None = None
    best_value: float | None = None
    owner: str = ""
    team: str | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None
    trials: list[Trial] = []
    best: Trial | None = None
    importances: dict[str, float] | None = None
    importances_note: str | None = None


class SweepPage(_Model):
    items: list[Sweep] = []
    next_cursor: str | None = None

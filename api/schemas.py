"""Response bodies: the contract clients (the CLI, the dashboard, scripts) rely on."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field

from core.report_model import Report  # torch-free: the engine's report, typed once
from store.models import JobStatus, as_utc  # the model's status enum is the API's too

Priority = Literal["low", "normal", "high"]


UTCDateTime = Annotated[datetime, AfterValidator(as_utc)]


class JobError(BaseModel):
    type: str = Field(description="bad_spec, data_missing, out_of_memory, diverged, worker_lost, ...")
    message: str


class Waiting(BaseModel):
    """Where a job that has not started stands, and why it waits."""

    position: int | None = Field(
        description="1-based place in its GPU-type queue, in the scheduler's order, as of the "
        "dispatcher's last pass; null until a pass has placed it (reason `scheduling`)."
    )
    reason: Literal["scheduling", "dispatched", "dispatching", "no_worker", "team_limit", "pool_busy"] = (
        Field(
            description="scheduling: submitted (or back in the queue) since the dispatcher's last pass, "
            "which places it within a few seconds; dispatched: handed to a worker host; dispatching: a "
            "host has room for it; "
            "no_worker: no online host has its GPU type, or as many GPUs as it asks for; team_limit: its "
            "team's jobs hold its max_running GPU slots (an N-GPU job counts N); pool_busy: every "
            "matching host is busy (or held for a bigger job ahead, which the message names)."
        )
    )
    message: str


class Placement(BaseModel):
    """Where the scheduler put a job: one worker host and the device indices it holds there
    (GPU indices as the host's nvidia-smi numbers them; slot numbers on a CPU host)."""

    worker: str = Field(description="The worker host's id, as GET /v1/pool lists it.")
    devices: list[int]


class JobLinks(BaseModel):
    self: str
    metrics: str
    artifacts: str
    events: str


class JobResult(BaseModel):
    """The headline numbers of a succeeded job (the whole report is on the job itself)."""

    student_top1: float | None = Field(None, description="The distilled student's test top-1.")
    baseline_top1: float | None = Field(None, description="The labels-only baseline's test top-1.")
    teacher_top1: float | None = Field(None, description="The (first) teacher's test top-1.")
    kd_gain: float | None = Field(None, description="student_top1 − baseline_top1.")
    kd_gain_stderr: float | None = None
    best_epoch: int | None = Field(None, description="The student's best validation epoch.")


class JobSummary(BaseModel):
    """A job as the list shows it: state and headline result, without the spec and the report.
    ``version`` changes with every update (it is the job's ETag)."""

    id: str
    name: str
    status: JobStatus
    attempt: int = Field(description="Runs started so far (1 while the first one runs).")
    max_attempts: int
    queue: str = Field(description="The GPU-type queue the job waits in.")
    gpus: int = Field(description="GPUs it asked for (resources.gpus): it holds max(1, gpus) of one host.")
    placement: Placement | None = Field(
        description="The host and devices it was handed to; null while it waits. Kept once it ends."
    )
    priority: Priority
    queue_position: int | None = Field(description="1-based place in its queue while waiting, else null.")
    waiting: Waiting | None = Field(description="Why it has not started yet; null once it has.")
    progress: dict[str, Any] | None = Field(
        description="{stage, epoch, epochs, fraction, eta_s} while running."
    )
    error: JobError | None
    result: JobResult | None = Field(description="Headline numbers once the job succeeded.")
    owner: str
    team: str | None
    sweep: str | None = Field(None, description="The sweep this job is a trial of (`?sweep=` lists them).")
    trial: int | None = Field(None, description="Its trial number in that sweep.")
    version: int
    created_at: UTCDateTime
    updated_at: UTCDateTime
    started_at: UTCDateTime | None
    finished_at: UTCDateTime | None
    links: JobLinks


class JobOut(JobSummary):
    """A job as clients see it: its summary, its spec and, once it succeeded, its report."""

    report: Report | None = Field(description="The engine's report once the job succeeded (docs/report.md).")
    spec: dict[str, Any]


class JobPage(BaseModel):
    items: list[JobSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")


class MetricOut(BaseModel):
    id: int
    stage: str
    epoch: int
    step: int
    name: str
    value: float | None = Field(description="null for NaN or infinite values (a diverged run).")


class MetricPage(BaseModel):
    items: list[MetricOut]
    next_cursor: str = Field(description="Pass as `after` to get only newer rows (the same when none).")
    has_more: bool = Field(description="More rows are available right now (the page was full).")


class EventOut(BaseModel):
    id: int
    at: UTCDateTime
    kind: str
    from_status: str | None
    to_status: str | None
    message: str
    actor: str | None


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: str
    has_more: bool


class ArtifactOut(BaseModel):
    id: str
    name: str = Field(description="The report's key for this artifact, e.g. student.onnx.")
    filename: str
    size: int
    sha256: str
    url: str
    created_at: UTCDateTime


class ArtifactList(BaseModel):
    items: list[ArtifactOut]


class UploadOut(BaseModel):
    """An uploaded model or dataset, stored under the data root for specs to name."""

    id: str
    kind: Literal["model", "dataset"]
    format: str
    filename: str
    path: str = Field(description="Relative to the data root: what a spec names.")
    size: int
    sha256: str
    details: dict[str, Any] | None
    summary: dict[str, Any] | None = Field(None, description="For datasets: sizes, input shape, classes.")
    spec_fragment: dict[str, Any] = Field(description="How a job spec uses this upload.")
    created_at: UTCDateTime


class UploadList(BaseModel):
    items: list[UploadOut]


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)


# ---------------------------------------------------------------- sweeps


SweepStatusName = Literal["running", "succeeded", "failed", "cancelled"]


class TrialOut(BaseModel):
    """One trial of a sweep: an ordinary job (``job_id``) with the parameter values it was given."""

    number: int = Field(description="The Optuna trial number, from 0 in the order trials were made.")
    job_id: str | None = Field(description="Its job; null for a trial whose spec was refused.")
    params: dict[str, Any] = Field(description="The values of the sweep's parameters, by spec path.")
    status: str = Field(
        description="Its job's status (queued ... succeeded, failed, cancelled, pruned); "
        "`invalid`: its spec was refused, so no job was made (`error` says why)."
    )
    objective: float | None = Field(
        description="Its objective once it completed; for a pruned trial, the last value it reported "
        "(at `pruned_at_epoch`), which the best trial is never chosen from."
    )
    pruned_at_epoch: int | None = Field(description="The student epoch at which the pruner stopped it.")
    error: str | None = Field(description="Why it was pruned, failed or refused.")


class SweepLinks(BaseModel):
    self: str
    cancel: str


class SweepSummary(BaseModel):
    """A sweep as the list shows it: its state, budget, counts of trials by status and best value."""

    id: str
    name: str
    status: SweepStatusName
    message: str = Field(description="Why it ended, or what it waits for while running.")
    method: Literal["grid", "random", "tpe"]
    objective: dict[str, Any] = Field(description="{metric, direction} of the student on validation.")
    early_stopping: dict[str, Any]
    max_trials: int
    max_concurrent: int
    trials_by_status: dict[str, int] = Field(description="Its trial jobs, counted by job status.")
    best_job_id: str | None
    best_value: float | None
    owner: str
    team: str | None
    version: int
    created_at: UTCDateTime
    updated_at: UTCDateTime
    finished_at: UTCDateTime | None
    links: SweepLinks


class SweepOut(SweepSummary):
    """A sweep with its request, every trial, the best trial and the parameters' importances."""

    request: dict[str, Any] = Field(description="The request as stored, with its defaults decided.")
    trials: list[TrialOut]
    best: TrialOut | None = Field(description="The completed trial with the best objective.")
    importances: dict[str, float] | None = Field(
        description="Each parameter's share of the objective's variance (fANOVA), once 2 trials completed."
    )
    importances_note: str | None = Field(description="Why `importances` is null.")


class SweepPage(BaseModel):
    items: list[SweepSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")

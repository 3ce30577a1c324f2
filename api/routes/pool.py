"""The GPU pool: each worker host, its devices and the jobs holding them, and the queue per team and
GPU type."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.auth import CallerDep
from api.deps import SessionDep
from api.schemas import UTCDateTime
from domain import pool

router = APIRouter(prefix="/v1", tags=["pool"])


class JobBrief(BaseModel):
    """A job holding slots of a host, and which. Another team's job shows its team, status,
    devices and how far along it is (stage, fraction, eta_s) only: its id, name and owner are null."""

    id: str | None
    name: str | None
    owner: str | None
    team: str | None
    status: str
    progress: dict[str, Any] | None
    gpus: int = Field(description="GPUs it asked for: it holds max(1, gpus) slots of this host.")
    devices: list[int] | None = Field(description="The device indices of this host it holds.")


class WorkerOut(BaseModel):
    """A worker host: one Celery worker per machine and GPU type, a job slot per GPU (or per CPU
    slot on a machine without GPUs)."""

    id: str
    host: str
    gpu_type: str
    status: str  # online | lost | offline
    slots: int = Field(description="Its GPUs (or CPU slots): a job asking for N GPUs takes N of one host.")
    free_slots: int = Field(description="Slots no job holds or was handed (0 unless online).")
    devices: list[dict[str, Any]]  # index, name, memory_mb, memory_used_mb, utilization (%) where known
    started_at: UTCDateTime
    last_heartbeat_at: UTCDateTime
    job: JobBrief | None = Field(description="The first job it runs (see jobs for all of them).")
    jobs: list[JobBrief] = Field(
        description="The jobs holding its slots, started or handed over, with their device indices."
    )


class QueueCount(BaseModel):
    queued: int
    running: int


class TeamQueue(QueueCount):
    team: str


class GpuQueue(QueueCount):
    queue: str


class PoolOut(BaseModel):
    workers: list[WorkerOut]
    teams: list[TeamQueue]
    queues: list[GpuQueue]


@router.get("/pool", response_model=PoolOut, summary="Workers, GPUs, what runs where, the queues")
def get_pool(session: SessionDep, caller: CallerDep) -> dict[str, Any]:
    """Worker hosts report every `DISTILLERY_HEARTBEAT_S` seconds; one silent for
    `DISTILLERY_WORKER_TIMEOUT_S` is `lost`, and the jobs it held or was handed go back to the queue.
    Everyone sees the whole pool and every team's queue; another team's job shows only its
    team, status and progress."""
    return pool.view(session, caller)

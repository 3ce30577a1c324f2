"""The GPU pool: each worker and its devices, the job it runs, and the queue per team and GPU type."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from api.auth import CallerDep
from api.deps import SessionDep
from api.schemas import UTCDateTime
from domain import pool

router = APIRouter(prefix="/v1", tags=["pool"])


class JobBrief(BaseModel):
    """Another team's job shows its team, status and how far along it is (stage, fraction,
    eta_s) only: its id, name and owner are null."""

    id: str | None
    name: str | None
    owner: str | None
    team: str | None
    status: str
    progress: dict[str, Any] | None


class WorkerOut(BaseModel):
    id: str
    host: str
    gpu_type: str
    status: str  # online | lost | offline
    devices: list[dict[str, Any]]  # name, memory_mb, memory_used_mb, utilization (%) where known
    started_at: UTCDateTime
    last_heartbeat_at: UTCDateTime
    job: JobBrief | None


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
    """Workers report every `DISTILLERY_HEARTBEAT_S` seconds; one silent for
    `DISTILLERY_WORKER_TIMEOUT_S` is `lost`, and the job it held goes back to the queue.
    Everyone sees the whole pool and every team's queue; another team's job shows only its
    team, status and progress."""
    return pool.view(session, caller)

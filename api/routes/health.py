"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import StateDep
from api.problems import Problem
from api.schemas import Health
from api.telemetry import ApiMetrics
from domain.health import NotReadyError, check_database

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_S = 5.0


@router.get("/healthz", response_model=Health, summary="The process is alive")
def healthz() -> Health:
    """Answers without touching the database or the broker."""
    return Health(status="ok")


async def _run_check(name: str, check: Callable[..., None], *args: object) -> str:
    try:
        await asyncio.wait_for(run_in_threadpool(check, *args), CHECK_TIMEOUT_S)
    except Exception as e:
        log.warning("readiness: %s is not ready: %s", name, e)
        return f"unavailable: {type(e).__name__}"
    return "ok"


@router.get(
    "/readyz",
    response_model=Health,
    summary="The database and the broker answer",
    responses={503: {"model": Problem, "description": "Not ready: a dependency does not answer."}},
)
async def readyz(state: StateDep) -> Response:
    checks = {
        "database": await _run_check("database", check_database, state.settings.db_url),
        "broker": await _run_check("broker", state.check_broker),
    }
    failing = [name for name, result in checks.items() if result != "ok"]
    if failing:
        raise NotReadyError({name: checks[name] for name in failing})
    return JSONResponse(Health(status="ready", checks=checks).model_dump())


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(request: Request) -> Response:
    telemetry = request.app.state.telemetry
    assert isinstance(telemetry, ApiMetrics)
    return Response(generate_latest(telemetry.registry), media_type=CONTENT_TYPE_LATEST)

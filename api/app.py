"""The application factory.

    uvicorn --factory api.app:create_served_app   # settings from DISTILLERY_* variables

``create_app`` wires the settings, the publisher (how a job id reaches the broker), the broker
readiness check and, in its lifespan, the dispatcher thread that republishes jobs the broker
missed and reaps expired leases. Tests pass a fake publisher and no dispatcher; nothing here
imports Celery until the default publisher first runs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI

from api import dashboard
from api.auth import bearer_secret, get_caller
from api.deps import AppState, BrokerCheck, Publish
from api.headers import SecurityHeadersMiddleware
from api.heap import settle_for_serving
from api.inputs import NulGuardMiddleware
from api.limits import BodyLimitMiddleware, LimitFor
from api.openapi import install_openapi
from api.problems import install_handlers
from api.routes import admin, artifacts, catalog, events, health, jobs, metrics, pool, spec, sweeps, uploads
from api.telemetry import ApiMetrics, MetricsMiddleware
from store.db import session_scope
from store.identity import ensure_admin
from store.settings import Settings, get_settings

log = logging.getLogger(__name__)

MULTIPART_SLACK = 64 * 1024  # part headers and boundaries around an upload of the maximum size
UPLOAD_PATHS = ("/v1/models", "/v1/datasets")

TAGS = [
    {"name": "jobs", "description": "Submit distillation jobs and follow them: state, metrics, events."},
    {
        "name": "sweeps",
        "description": "Searches over a spec's parameters whose trials are jobs, with early stopping.",
    },
    {"name": "artifacts", "description": "Students, reports and weights of finished jobs, with checksums."},
    {"name": "uploads", "description": "Teacher models and datasets for specs to name."},
    {"name": "catalog", "description": "What a job spec can name, and its JSON Schema."},
    {"name": "pool", "description": "The GPU workers, what runs where, and the queue per team."},
    {
        "name": "access",
        "description": "Teams, users and API tokens (admins), who you are, and the audit trail.",
    },
    {"name": "health", "description": "Liveness, readiness and Prometheus metrics."},
]


def celery_publisher(settings: Settings) -> Publish:
    """Publishes through a Celery app made on first use (the API starts without a broker)."""
    lock = threading.Lock()
    made: list[Any] = []

    def publish(job_id: str, worker_id: str) -> None:
        from worker.celery_app import make_celery
        from worker.celery_app import publish as send

        with lock:
            if not made:
                made.append(make_celery(settings))
        send(made[0], job_id, worker_id)

    return publish


def kombu_check(settings: Settings) -> BrokerCheck:
    def check() -> None:
        from kombu import Connection

        with Connection(settings.broker, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1)

    return check


def _limit_for(settings: Settings) -> LimitFor:
    def limit_for(method: str, path: str) -> int:
        if method == "POST" and path.rstrip("/") in UPLOAD_PATHS:
            return settings.max_upload_bytes + MULTIPART_SLACK
        return settings.max_spec_bytes  # a spec is the largest body of any other route

    return limit_for


def _lifespan(
    settings: Settings, state: AppState, run_dispatcher: bool
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """At start: make sure the configured admin token exists, start the dispatcher; at exit, stop it."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if settings.admin_token is not None:
            try:
                with session_scope(settings.db_url) as session:
                    ensure_admin(session, settings.admin_token.get_secret_value())
            except Exception as e:  # the first request with that token makes it (api.auth)
                log.warning("could not make sure the admin token exists yet: %s", e)
        dispatcher = None
        if run_dispatcher:
            from worker.dispatcher import Dispatcher

            dispatcher = Dispatcher(settings, state.publish)
            dispatcher.start()
            state.wake_dispatcher = dispatcher.wake
        try:
            yield
        finally:
            if dispatcher is not None:
                dispatcher.stop()
            await state.close_loop_clients()

    return lifespan


def create_app(
    settings: Settings | None = None,
    *,
    publish: Publish | None = None,
    run_dispatcher: bool = True,
    check_broker: BrokerCheck | None = None,
) -> FastAPI:
    settings = settings or get_settings()
    state = AppState(
        settings=settings,
        publish=publish or celery_publisher(settings),
        check_broker=check_broker or kombu_check(settings),
    )

    app = FastAPI(
        title="Distillery",
        version="1",
        summary="Knowledge-distillation jobs on a shared GPU pool.",
        description=(
            "Submit a distillation job spec, follow it (polling with ETags, incremental metrics, "
            "or Server-Sent Events), and download the student. Every `/v1` route needs an API "
            "token (`Authorization: Bearer <token>`); a team sees its own jobs only. Errors are "
            "RFC 9457 `application/problem+json`; a bad spec names each offending field."
        ),
        openapi_tags=TAGS,
        lifespan=_lifespan(settings, state, run_dispatcher),
    )
    app.state.distillery = state
    app.state.telemetry = ApiMetrics(settings.db_url)
    install_handlers(app)
    # Every /v1 route needs a token, checked before anything reads the body or the path: by
    # get_caller, or for the hot reads (api.hot) by bearer_secret, then in the read's own trip.
    for router in (jobs.reads, metrics.router):
        app.include_router(router, dependencies=[Depends(bearer_secret)])
    authenticated = [Depends(get_caller)]
    for router in (
        jobs.router, events.router, artifacts.router, catalog.router, spec.router,
        pool.router, admin.router, uploads.router, uploads.read_router, sweeps.router,
    ):  # fmt: skip
        app.include_router(router, dependencies=authenticated)
    app.include_router(health.router)
    app.include_router(dashboard.router)
    app.mount("/ui", dashboard.static_files(), name="ui")
    # Added last = outermost: sizes are checked before anything reads the body, and the
    # metrics see every answer, 413s included.
    app.add_middleware(NulGuardMiddleware)
    app.add_middleware(BodyLimitMiddleware, limit_for=_limit_for(settings))
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=app.state.telemetry)
    install_openapi(app, TAGS)
    return app


def create_served_app(settings: Settings | None = None) -> FastAPI:
    """``create_app`` for a process that serves it (``distill api``, ``distill serve``, each of
    ``distill api --workers N``'s processes): the garbage collector settled once the application
    is built (``api.heap``)."""
    app = create_app(settings)
    settle_for_serving()
    return app

"""Prometheus metrics: requests by route and status, latency, and jobs by status.

Each application gets its own registry (tests build many apps in one process). Job counts are
read from the database when Prometheus scrapes, so they are never stale and cost nothing
between scrapes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from store.db import session_scope
from store.models import STATUSES, WAITING, Job

log = logging.getLogger(__name__)


class JobCollector(Collector):
    def __init__(self, db_url: str) -> None:
        self.db_url = db_url

    def collect(self) -> Iterator[Metric]:
        by_status = GaugeMetricFamily("distillery_jobs", "Jobs by status.", labels=["status"])
        unpublished = GaugeMetricFamily(
            "distillery_jobs_awaiting_broker",
            "Queued jobs not yet handed to the broker (it was down at submit time).",
        )
        try:
            with session_scope(self.db_url) as session:
                counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
                waiting = session.scalar(
                    select(func.count()).where(Job.status.in_(WAITING), Job.published_at.is_(None))
                )
        except Exception:  # a scrape must not fail because the database is away: readyz says so
            log.warning("cannot count jobs for /metrics", exc_info=True)
            return
        for status in STATUSES:
            by_status.add_metric([status], counts.get(status, 0))
        unpublished.add_metric([], waiting or 0)
        yield by_status
        yield unpublished


class ApiMetrics:
    def __init__(self, db_url: str) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "distillery_http_requests",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "distillery_http_request_duration_seconds",
            "Time to the end of the response, by method and route template.",
            ["method", "route"],
            registry=self.registry,
        )
        self.registry.register(JobCollector(db_url))


class MetricsMiddleware:
    """Labels by the matched route's template (``/v1/jobs/{job_id}``), never the raw path."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(scope["method"], route).observe(time.perf_counter() - start)

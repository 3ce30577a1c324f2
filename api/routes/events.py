"""A job's events: a Server-Sent Events stream that follows the job to its end, or the same
history as JSON (``?format=json``, or ``Accept: application/json``) for pages and scripts.

The stream polls the database with a fresh short session every ``POLL_S`` seconds (the row is
the source of truth; a worker on another machine writes it) and sends:

- ``event: event`` with each new ``JobEvent`` (``id:`` is the row id, so a reconnecting
  ``EventSource`` resumes after ``Last-Event-ID``);
- ``event: job`` with the whole job whenever its version changes;
- a ``: ping`` comment when idle, so proxies keep the connection open.

It ends once the job is finished (after sending its final state), or with ``event: deleted`` if
the job is deleted or the caller's token revoked meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.sse import KEEPALIVE_COMMENT, EventSourceResponse, format_sse_event

from api.auth import CallerDep, JobDep
from api.cursors import decode_row_cursor
from api.deps import AppState, SessionDep, StateDep
from api.problems import Problem, database_unavailable
from api.schemas import EventOut, EventPage, JobOut
from api.streams import Slot
from api.views import event_out, job_out
from core.errors import UnavailableError
from domain import activity

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

POLL_S = 0.5
PING_S = 15.0
RETRY_MS = 2000
BATCH = 500


def _poll(
    state: AppState, job_id: str, seen_version: int | None, after: int, token_id: str
) -> tuple[JobOut | None, list[EventOut], bool] | None:
    """(the job if its version changed, new events, finished), rendered; None once the job is
    gone or the stream's token has been revoked. A short read-only session of its own."""
    with state.sessions() as session:
        polled = activity.poll_job(
            session, job_id, seen_version=seen_version, after=after, token_id=token_id, batch=BATCH
        )
        if polled is None:
            return None
        changed = job_out(session, polled.job) if polled.changed else None
        return changed, [event_out(e) for e in polled.events], polled.finished


async def stream(state: AppState, job_id: str, after: int, slot: Slot) -> AsyncIterator[bytes]:
    """Polls with a short session of its own each time (admitted like a request): between polls
    the stream holds no connection and no transaction, only its ``slot``."""
    try:
        async for chunk in _follow(state, job_id, after, slot.token_id):
            yield chunk
    finally:
        slot.release()


async def _follow(state: AppState, job_id: str, after: int, token_id: str) -> AsyncIterator[bytes]:
    yield format_sse_event(retry=RETRY_MS)
    version: int | None = None
    last_sent = time.monotonic()
    while True:
        try:
            async with state.db_gate.admit():
                polled = await run_in_threadpool(_poll, state, job_id, version, after, token_id)
        except Exception as e:
            if not (isinstance(e, UnavailableError) or database_unavailable(e)):
                raise
            # the database is busy or away: keep the stream open (pings) and poll again later
            polled = (None, [], False)
        if polled is None:
            yield format_sse_event(event="deleted", data_str=json.dumps({"id": job_id}))
            return
        job, events, finished = polled
        for event in events:
            yield format_sse_event(event="event", data_str=event.model_dump_json(), id=str(event.id))
            after = event.id
        if job is not None:
            yield format_sse_event(event="job", data_str=job.model_dump_json())
            version = job.version
        if events or job is not None:
            last_sent = time.monotonic()
        if finished:
            return
        if time.monotonic() - last_sent >= PING_S:
            yield KEEPALIVE_COMMENT
            last_sent = time.monotonic()
        await asyncio.sleep(POLL_S)


@router.get(
    "/{job_id}/events",
    summary="Follow a job (Server-Sent Events), or its history as JSON",
    response_model=None,
    responses={
        200: {
            "description": "`text/event-stream` (events `job`, `event`, `deleted`), or an EventPage as JSON.",
            "content": {
                "text/event-stream": {"schema": {"type": "string"}},
                "application/json": {"schema": {"$ref": "#/components/schemas/EventPage"}},
            },
        },
        404: {"model": Problem, "description": "No such job."},
        429: {"model": Problem, "description": "Too many event streams open (per token, or in total)."},
    },
)
def job_events(
    job: JobDep,
    caller: CallerDep,
    session: SessionDep,
    state: StateDep,
    request: Request,
    fmt: Annotated[
        Literal["sse", "json"] | None, Query(alias="format", description="Default: from Accept.")
    ] = None,
    after: Annotated[str | None, Query(description="Only events after this cursor (an event id).")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="JSON only: page size.")] = 200,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> Any:
    accept = request.headers.get("accept", "")
    as_json = fmt == "json" or (
        fmt is None and "application/json" in accept and "text/event-stream" not in accept
    )
    start = decode_row_cursor(after) if after else decode_row_cursor(last_event_id, "Last-Event-ID")
    if as_json:
        page = activity.events_page(session, job.id, after=start, limit=limit)
        return EventPage(
            items=[event_out(e) for e in page.items],
            next_cursor=str(page.next_cursor),
            has_more=page.has_more,
        )
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering
    slot = state.streams.take(caller.token_id)  # 429 past the caps
    return EventSourceResponse(stream(state, job.id, start, slot), headers=headers)

"""Who is calling: bearer tokens, roles, and a rate limit per token (DESIGN.md §5).

Every ``/v1`` route depends on ``get_caller``: no token or an unknown or revoked one is a ``401``
(with ``WWW-Authenticate: Bearer``), a token over its rate is a ``429`` with ``Retry-After``.
Revocation is checked on every request (one indexed lookup), so it takes effect at once on every
API process. ``WriterDep`` adds the role check for submit, cancel, delete and uploads (viewers
only read); ``AdminDep`` guards teams, users and tokens.

The rate limit itself is ``api.ratelimit.RateLimiter``.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

from fastapi import Depends, Path, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from api.deps import AppState, SessionDep, StateDep, database_busy
from core.errors import ForbiddenError, TooManyRequestsError, UnauthorizedError
from domain.jobs import get_visible
from store.identity import Authenticated, Caller, authenticate, ensure_admin, mark_used, used_long_ago
from store.loop_reads import LoopError, LoopPoolTimeout, LoopReads, SqliteLoopReads
from store.models import Job
from store.reads import Opening
from store.settings import Settings

T = TypeVar("T")

log = logging.getLogger(__name__)

BEARER = "Bearer"


def _unauthorized(detail: str) -> UnauthorizedError:
    return UnauthorizedError(detail)


def _is_admin_token(settings: Settings, secret: str) -> bool:
    wanted = settings.admin_token
    return wanted is not None and hmac.compare_digest(wanted.get_secret_value().encode(), secret.encode())


async def bearer_secret(request: Request) -> str:
    """The request's token, as sent; a missing or malformed header is a 401 before anything else
    runs. It proves nothing yet: ``verify`` does, against the database."""
    header = request.headers.get("authorization")
    if not header:
        raise _unauthorized("send an API token: Authorization: Bearer <token>")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != BEARER.lower() or not secret.strip():
        raise _unauthorized("the Authorization header must be 'Bearer <token>'")
    return secret.strip()


SecretDep = Annotated[str, Depends(bearer_secret)]


def verify(session: Session, state: AppState, secret: str, found: Authenticated | None = None) -> Caller:
    """The token's caller, checked in the database (unknown or revoked: 401) and against its rate
    (429). Runs on the request's worker thread: ``get_caller`` for most routes, or inside the one
    trip the hot reads make (``api.hot``, which has read the token already: ``found``)."""
    caller = _authenticate(session, state.settings, secret, found)
    if caller is None:
        raise _unauthorized("this token is unknown or has been revoked")
    wait = state.rate_limiter.retry_after(caller.token_id)
    if wait is not None:
        raise too_many(state.settings, wait)
    return caller


async def verify_found(state: AppState, found: Authenticated) -> Caller:
    """``verify`` on the event loop, for a token a first query found (``api.hot``, ``get_caller``):
    its rate, and its ``last_used_at`` when stale (on a worker thread)."""
    if used_long_ago(found.last_used_at):
        await run_in_threadpool(_mark_used_now, state, found.caller.token_id)
    wait = await state.rate_limiter.retry_after_async(found.caller.token_id)
    if wait is not None:
        raise too_many(state.settings, wait)
    return found.caller


def _mark_used_now(state: AppState, token_id: str) -> None:
    with state.read_sessions() as session:  # autocommit: written at once
        mark_used(session, token_id)


async def open_on_loop(state: AppState, secret: str, job_id: str | None = None) -> Opening | None:
    """``open_read`` on the event loop (``on_loop``)."""
    return await on_loop(state, lambda reads: reads.open_read(secret, job_id))


async def on_loop(state: AppState, read: Callable[[LoopReads | SqliteLoopReads], Awaitable[T]]) -> T | None:
    """``read`` on the event loop (``store.loop_reads``: PostgreSQL through psycopg, or a SQLite
    file); None for another database, or if the read failed or found SQLite busy (the caller's
    usual way, on a thread, waits and reports an unreachable database). No connection free in
    time is the 503 ``database-busy``."""
    reads = state.loop_reads.get()
    if reads is None:
        return None
    try:
        return await read(reads)
    except LoopPoolTimeout:
        raise database_busy() from None
    except LoopError:
        return None


def too_many(settings: Settings, wait: int) -> TooManyRequestsError:
    return TooManyRequestsError(
        "rate-limited",
        f"more than {settings.rate_limit} requests with this token; retry in {wait} s",
        retry_after_s=wait,
    )


async def get_caller(secret: SecretDep, session: SessionDep, state: StateDep) -> Caller:
    """The caller of every route but the hot reads (``api.hot``, which check the token in their
    own first query). On the event loop (``store.loop_reads``, PostgreSQL or SQLite): one query of
    the token and its rate, no trip to a worker thread before the route's own. For a token that
    query does not know (401, or the configured admin token's first use, which makes it), or a
    query that failed, ``verify`` on a worker thread with the request's session."""
    opened = await open_on_loop(state, secret)
    if opened is not None and opened.token is not None:
        return await verify_found(state, opened.token)
    return await run_in_threadpool(verify, session, state, secret)


def _authenticate(
    session: Session, settings: Settings, secret: str, found: Authenticated | None = None
) -> Caller | None:
    """The token's caller. Whatever this writes is committed at once, before the route runs.

    A write left to the request's commit (``last_used_at``) would hold the token's row lock
    (PostgreSQL) or the database's write lock (SQLite) for the whole request, and every other
    request with that token would wait on it. Here the rare write is one conditional UPDATE
    committed straight away, and a request that reads only takes no lock at all.
    """
    found = found or authenticate(session, secret)
    if found is None and _is_admin_token(settings, secret):
        # the start-up could not make it (the database was down then): make it now
        ensure_admin(session, secret, revive=False)
        session.commit()
        found = authenticate(session, secret)
    if found is not None and used_long_ago(found.last_used_at):
        mark_used(session, found.caller.token_id)
        session.commit()
    return None if found is None else found.caller


CallerDep = Annotated[Caller, Depends(get_caller)]


async def get_writer(caller: CallerDep) -> Caller:
    if not caller.can_write:
        raise ForbiddenError(
            f"{caller.user} is a {caller.role}: viewers can read but not change jobs or uploads"
        )
    return caller


async def get_admin(caller: CallerDep) -> Caller:
    if not caller.is_admin:
        raise ForbiddenError("only an admin can manage teams, users and tokens")
    return caller


WriterDep = Annotated[Caller, Depends(get_writer)]
AdminDep = Annotated[Caller, Depends(get_admin)]


def get_job(job_id: Annotated[str, Path(max_length=64)], session: SessionDep, caller: CallerDep) -> Job:
    """The job in the path, if the caller may see it: another team's job is a 404 (its existence
    is not revealed), as is a deleted one (its row stays for the audit trail)."""
    return get_visible(session, caller, job_id)


JobDep = Annotated[Job, Depends(get_job)]

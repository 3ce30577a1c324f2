"""RFC 9457 problem details: every error the API returns is ``application/problem+json``.

Routes, the jobs domain and the store raise errors of the one tree in ``core.errors``; the
handlers registered by ``install_handlers`` turn those (``type`` → ``urn:distillery:problem:<type>``,
``status``, the message as ``detail``), FastAPI's own ``HTTPException``, request validation
errors, an unreachable database and any unexpected exception into one shape:
``{type, title, status, detail, instance, errors: [{field, message}]}``. Nothing else in the API
builds a problem.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from core.errors import DistilleryError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
_TYPE_PREFIX = "urn:distillery:problem:"
DATABASE_RETRY_AFTER_S = 5  # a restart or failover of the database takes seconds, not minutes
# SQLite reports some bugs (a missing table or column, bad SQL) as OperationalError, too
_SQLITE_BUGS = ("no such table", "no such column", "syntax error")


class FieldError(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None


def problem_response(
    request: Request,
    status: int,
    *,
    detail: str | None = None,
    kind: str | None = None,
    title: str | None = None,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    problem = Problem(
        type=f"{_TYPE_PREFIX}{kind}" if kind else "about:blank",
        title=title or _phrase(status),
        status=status,
        detail=detail,
        instance=request.url.path,
        errors=errors,
    )
    return JSONResponse(
        problem.model_dump(exclude_none=True), status_code=status, headers=headers, media_type=PROBLEM_JSON
    )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(request)"


async def _on_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DistilleryError)
    if exc.status >= 500 and exc.status != 503:  # a bug, not a refusal: log it, say little
        return await _on_unexpected(request, exc)
    errors = [FieldError(field=e.field, message=e.message) for e in exc.errors] or None
    return problem_response(
        request,
        exc.status,
        detail=exc.message or None,
        kind=exc.type,
        title=exc.title,
        errors=errors,
        headers=exc.headers or None,
    )


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail: str | None = exc.detail if isinstance(exc.detail, str) else None
    if detail == _phrase(exc.status_code):
        detail = None
    headers = dict(exc.headers) if exc.headers else None
    return problem_response(request, exc.status_code, detail=detail, headers=headers)


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for item in exc.errors():
        if item.get("type") == "json_invalid":
            reason = (item.get("ctx") or {}).get("error", "")
            errors.append(FieldError(field="body", message=f"malformed JSON: {reason}".rstrip(": ")))
        else:
            errors.append(FieldError(field=_location(tuple(item.get("loc", ()))), message=item["msg"]))
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
    return problem_response(request, 422, detail=detail, kind="invalid-request", errors=errors)


async def _on_disconnect(request: Request, exc: Exception) -> JSONResponse:
    """The client went away before its whole body arrived: nothing was stored, nobody reads the
    answer, and it is no error of the service's (under load, a client's timeout)."""
    log.info("client left %s %s before sending its whole body", request.method, request.url.path)
    return problem_response(request, 400, detail="the client closed the connection before its body ended")


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(request, 500, detail="an unexpected error occurred; it has been logged")


def database_unavailable(exc: BaseException) -> bool:
    """The database did not answer (down, restarting, unreachable, no free connection): no bug."""
    if isinstance(exc, DisconnectionError | PoolTimeoutError):
        return True
    if isinstance(exc, OperationalError):
        return not any(bug in str(exc.orig) for bug in _SQLITE_BUGS)
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


async def _on_database(request: Request, exc: Exception) -> JSONResponse:
    if not database_unavailable(exc):  # a genuine bug (a ProgrammingError, say): a logged 500
        return await _on_unexpected(request, exc)
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, reason)
    return problem_response(
        request,
        503,
        detail="the database is unavailable; retry shortly",
        kind="database-unavailable",
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
    )


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DistilleryError, _on_error)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(ClientDisconnect, _on_disconnect)
    # wherever a request meets an unreachable database: a 503 the client can retry, not a 500
    for database_error in (DBAPIError, DisconnectionError, PoolTimeoutError):
        app.add_exception_handler(database_error, _on_database)
    app.add_exception_handler(Exception, _on_unexpected)

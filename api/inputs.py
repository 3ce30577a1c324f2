"""What the API accepts from a request besides a spec: the shared bounds, stated once.

Every value reaches the database (SQLite in the embedded default, PostgreSQL in production), so
each is bounded by what the column holds on both: ``Integer`` is 32-bit on PostgreSQL and
``BigInteger`` 64-bit, and PostgreSQL cannot store a NUL character in text at all (SQLite can:
without these checks the same request would work on one database and be a 500 on the other).

``NulGuardMiddleware`` refuses a NUL in the path or in any query parameter before a route
runs; the annotated types below cover the JSON bodies.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qsl

from pydantic import AfterValidator, Field
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from api.problems import FieldError, problem_response

INT32_MAX = (1 << 31) - 1  # an Integer column on PostgreSQL
INT64_MAX = (1 << 63) - 1  # a BigInteger column
NUL_MESSAGE = "NUL characters (\\u0000) are not allowed"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


def no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError(NUL_MESSAGE)
    return value


Text = Annotated[str, AfterValidator(no_nul)]
"""Free text stored in a text column: any character but NUL."""

Name = Annotated[str, Field(pattern=NAME_PATTERN, description="Letters, digits, '.', '_', '-'; at most 100.")]
"""A team or user name: it appears in URLs, logs and the CLI's tables."""

Count = Annotated[int, Field(ge=0, le=INT32_MAX)]
"""A count kept in an ``Integer`` column."""

ByteCount = Annotated[int, Field(ge=0, le=INT64_MAX)]
"""A size in bytes, kept in a ``BigInteger`` column."""


def _nul_in(scope: Scope) -> str | None:
    """The name of the first path or query part holding a NUL, or None."""
    if "\x00" in scope["path"]:
        return "path"
    query = scope.get("query_string", b"").decode("latin-1")
    for name, value in parse_qsl(query, keep_blank_values=True):
        if "\x00" in name or "\x00" in value:
            return f"query.{name.replace(chr(0), '')}"
    return None


class NulGuardMiddleware:
    """A 422 naming the parameter for a NUL anywhere in the URL: no route needs its own check."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (field := _nul_in(scope)) is not None:
            errors = [FieldError(field=field, message=NUL_MESSAGE)]
            response = problem_response(
                Request(scope), 422, detail=f"{field}: {NUL_MESSAGE}", kind="invalid-request", errors=errors
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

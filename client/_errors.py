"""One small exception hierarchy, and the mapping from an HTTP answer to it.

The API answers every error with an RFC 9457 problem document
(``{type, title, status, detail, errors: [{field, message}]}``); anything else (a proxy's HTML
page, say) still becomes an ``ApiError`` that carries the status and the start of the body.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


@dataclass(frozen=True)
class Problem:
    """An RFC 9457 problem document, as far as this client reads it."""

    status: int
    title: str
    detail: str | None = None
    type: str = "about:blank"
    errors: list[FieldError] = field(default_factory=list)

    @classmethod
    def parse(cls, body: Any, status: int) -> Problem | None:
        if not isinstance(body, dict) or not isinstance(body.get("title"), str):
            return None
        errors = [
            FieldError(str(e.get("field", "")), str(e.get("message", "")))
            for e in body.get("errors") or []
            if isinstance(e, dict)
        ]
        detail = body.get("detail")
        return cls(
            status=int(body.get("status") or status),
            title=body["title"],
            detail=str(detail) if detail is not None else None,
            type=str(body.get("type") or "about:blank"),
            errors=errors,
        )


class ClientError(Exception):
    """Anything this client raises."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unreachable(ClientError):
    """No answer from the server: refused, unresolvable, timed out, or cut off."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the Distillery server at {url}: {reason}")
        self.url = url
        self.reason = reason


class ChecksumMismatch(ClientError):
    """A downloaded file did not match the checksum the API listed (the file was removed)."""


class WaitTimeout(ClientError):
    """``Client.wait`` gave up before the job ended."""


class ApiError(ClientError):
    """The server answered with an error status."""

    def __init__(self, status: int, message: str, problem: Problem | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.problem = problem

    @property
    def errors(self) -> list[FieldError]:
        return self.problem.errors if self.problem else []


class AuthError(ApiError):
    """401 (no token, or an unknown or revoked one) or 403 (the token's role does not allow it)."""


class NotFound(ApiError):
    """404: no such job, artifact or upload (another team's are as absent as missing ones)."""


class Invalid(ApiError):
    """422, or a spec refused before it was sent: ``errors`` names each offending field."""

    def __init__(
        self,
        status: int,
        message: str,
        problem: Problem | None = None,
        errors: list[FieldError] | None = None,
    ) -> None:
        super().__init__(status, message, problem)
        self._errors = errors

    @property
    def errors(self) -> list[FieldError]:
        return self._errors if self._errors is not None else super().errors


class Conflict(ApiError):
    """409: the job's state or the team's limits do not allow it now."""


_BY_STATUS: dict[int, type[ApiError]] = {401: AuthError, 403: AuthError, 404: NotFound, 422: Invalid}


def error_for(response: httpx.Response) -> ApiError:
    """The exception for an error answer (its body must have been read)."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    problem = Problem.parse(body, status)
    if problem is not None:
        message = problem.detail or problem.title
    else:
        text = response.text.strip()
        message = f"HTTP {status} {response.reason_phrase}" + (f": {text[:200]}" if text else "")
    cls = _BY_STATUS.get(status, Conflict if status == 409 else ApiError)
    return cls(status, message, problem)

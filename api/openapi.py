"""The OpenAPI document: FastAPI's, completed with everything each operation can answer.

FastAPI documents a route's success and the responses the route lists itself. The errors come
from elsewhere: the caller's token (401, 429), the role checks (403), the database gate (503),
the body's decoding, reader and size limit (400, 413, 415), request validation (422), and a
conditional GET answers 304. Listing them route by route would drift as routes change, so
``complete_openapi`` derives them from each route's dependency tree and parameters, documents
every 4xx and 5xx as ``application/problem+json`` with the ``Problem`` schema (FastAPI would say
``application/json``) and a 304 without a body, and adds the media types that a few routes send
besides JSON. A generated client and a schema-driven tester then see no status and no content
type that the document does not name.

Codes that depend on what a route does rather than on what it depends on (409, 410) stay in the
route's own ``responses=``; their content is rewritten like the others.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, params
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from starlette.routing import BaseRoute

from api.auth import bearer_secret, get_admin, get_caller, get_writer
from api.deps import get_session
from api.documents import JSON_TYPES, YAML_TYPES, spec_document
from api.problems import PROBLEM_JSON, Problem
from api.schemas import EventPage
from core.spec import JobSpec
from domain.sweeps import SweepRequest

SCHEMAS = "#/components/schemas/"
PROBLEM_CONTENT = {PROBLEM_JSON: {"schema": {"$ref": f"{SCHEMAS}Problem"}}}
# FastAPI's placeholders, replaced by what the status means here
_GENERIC = {"Validation Error", "Additional Response", "Successful Response"}
# FastAPI's own 422 body, unused once every 422 is a problem
_FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_TEXT = {"schema": {"type": "string"}}


@dataclass(frozen=True)
class Answer:
    description: str
    headers: dict[str, str] = field(default_factory=dict)  # name -> what it says


ANSWERS: dict[int, Answer] = {
    304: Answer("Unchanged since the `ETag` given in `If-None-Match`; no body."),
    400: Answer("The body could not be parsed: a malformed multipart body, or JSON that is not UTF-8."),
    401: Answer(
        "No token, or an unknown or revoked one.",
        {"WWW-Authenticate": "`Bearer`: send `Authorization: Bearer <token>`."},
    ),
    403: Answer("The caller's role does not allow this (viewers only read; admins manage access)."),
    404: Answer("Nothing by that id, or nothing the caller may see."),
    413: Answer("The body is larger than this route accepts."),
    415: Answer("The body's media type is not one this route reads."),
    422: Answer("A parameter or the body is invalid: `errors` names each offending field."),
    429: Answer("Too many requests with this token.", {"Retry-After": "Seconds to wait before retrying."}),
    503: Answer(
        "The database is busy or unavailable; retry shortly.",
        {"Retry-After": "Seconds to wait before retrying."},
    ),
}

MEDIA: dict[tuple[str, str], dict[str, dict[str, Any]]] = {
    # the file as stored, typed from its name: weights and programs are binary, the report is
    # JSON, the summary Markdown, and any other name gets what the host's MIME table says
    ("get", "/v1/artifacts/{artifact_id}"): {
        "application/octet-stream": _BINARY,
        "application/json": {"schema": {"type": "object"}},
        "text/markdown": _TEXT,
        "*/*": _BINARY,
    },
    ("get", "/v1/jobs/{job_id}/events"): {
        "text/event-stream": _TEXT,
        "application/json": {"schema": {"$ref": f"{SCHEMAS}EventPage"}},
    },
    ("get", "/metrics"): {"text/plain": {"schema": {"type": "string", "description": "Prometheus text."}}},
}
"""Success bodies that are not the route's JSON model, by (method, path)."""


@dataclass
class _Needs:
    """What a route's dependency tree reads and checks."""

    calls: set[Callable[..., Any]] = field(default_factory=set)
    params: set[str] = field(default_factory=set)  # "path", "query", "header", "cookie"
    headers: set[str] = field(default_factory=set)  # lower-case names


def _walk(dependant: Dependant) -> Iterator[Dependant]:
    stack = [dependant]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(current.dependencies)


def _needs(route: RouteContext) -> _Needs:
    needs = _Needs()
    for dependant in _walk(route.dependant):
        if dependant.call is not None:
            needs.calls.add(dependant.call)
        for where, found in (
            ("path", dependant.path_params),
            ("query", dependant.query_params),
            ("header", dependant.header_params),
            ("cookie", dependant.cookie_params),
        ):
            if found:
                needs.params.add(where)
        needs.headers.update((f.alias or f.name).lower() for f in dependant.header_params)
    return needs


def _reads_form(route: RouteContext) -> bool:
    return any(isinstance(f.field_info, params.Form) for d in _walk(route.dependant) for f in d.body_params)


def problem_statuses(route: RouteContext) -> set[int]:
    """The statuses ``route`` can answer because of what it depends on and what it reads.

    ``route`` is a route as included in the app: its dependant holds the dependencies its
    routers added (``get_caller`` on every ``/v1`` router)."""
    needs = _needs(route)
    reads_spec = spec_document in needs.calls
    reads_form = _reads_form(route)
    has_body = route.body_field is not None or reads_spec
    found: set[int] = set()
    # every /v1 route: get_caller, or bearer_secret then the token verified in the read's trip
    # (api.hot), which takes a database connection through the gate too
    authenticated = get_caller in needs.calls or bearer_secret in needs.calls
    if authenticated:
        found |= {401, 429}
    if needs.calls & {get_writer, get_admin}:
        found.add(403)
    if get_session in needs.calls or authenticated:
        found.add(503)  # the database gate timed out, or the database did not answer
    if "path" in needs.params:
        found.add(404)
    if needs.params or has_body:
        found.add(422)
    if has_body:
        found.add(413)  # the body limit applies to every body, whoever reads it
    if reads_spec or reads_form:
        found.add(415)  # a spec is JSON or YAML; an upload is multipart/form-data only
    if route.body_field is not None:
        found.add(400)  # FastAPI's answer to a body it cannot decode (bad multipart, not UTF-8)
    if "if-none-match" in needs.headers:
        found.add(304)
    return found


def _document(response: dict[str, Any], status: int) -> None:
    """Make ``response`` say what ``status`` means here, in the content type the API sends."""
    answer = ANSWERS.get(status)
    if answer is not None and response.get("description", "") in ("", *_GENERIC):
        response["description"] = answer.description
    if status == 304:
        response.pop("content", None)
    elif status >= 400:
        response["content"] = copy.deepcopy(PROBLEM_CONTENT)  # one dict per response: no aliasing
    if answer is not None and answer.headers:
        declared = response.setdefault("headers", {})
        for name, text in answer.headers.items():
            declared.setdefault(name, {"description": text, "schema": {"type": "string"}})


def _by_status(item: tuple[str, Any]) -> tuple[bool, str]:
    return (not item[0].isdigit(), item[0])  # 200, 304, 401, ..., then "default"


def _complete_operation(operation: dict[str, Any], route: RouteContext, key: tuple[str, str]) -> None:
    """``key``: (method, path) of ``operation``, the answers of ``route``."""
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for status in problem_statuses(route):
        responses.setdefault(str(status), {})
    for code, response in responses.items():
        if code.isdigit():
            _document(response, int(code))
    media = MEDIA.get(key)
    success = next((code for code in sorted(responses) if code.startswith("2")), None)
    if media is not None and success is not None:
        responses[success]["content"] = copy.deepcopy(media)
    operation["responses"] = dict(sorted(responses.items(), key=_by_status))
    if spec_document in _needs(route).calls and "requestBody" not in operation:
        spec = {"schema": {"$ref": f"{SCHEMAS}JobSpec"}}
        types = (*JSON_TYPES, YAML_TYPES[0])
        operation["requestBody"] = {"required": True, "content": dict.fromkeys(types, spec)}


def _add_schemas(schema: dict[str, Any], *models: type[Any]) -> None:
    """``models`` as components, for the parts of the document no route's models bring in:
    ``JobSpec`` (the spec routes read their body by hand), ``Problem`` (no route need name it
    in its ``responses=``) and ``EventPage`` (the events route's JSON answer)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in models:
        found = model.model_json_schema(ref_template=SCHEMAS + "{model}")
        for name, definition in [*found.pop("$defs", {}).items(), (model.__name__, found)]:
            components.setdefault(name, definition)  # what FastAPI documented stays as it is


def _drop_unused(schema: dict[str, Any], names: Iterable[str]) -> None:
    components = schema.get("components", {}).get("schemas", {})
    for name in names:
        if name in components and f'"{SCHEMAS}{name}"' not in json.dumps(schema):
            del components[name]


def complete_openapi(schema: dict[str, Any], routes: Iterable[BaseRoute]) -> dict[str, Any]:
    """``schema`` (FastAPI's document for ``routes``) with every operation's answers, in place."""
    _add_schemas(schema, Problem, JobSpec, EventPage, SweepRequest)
    paths = schema.get("paths", {})
    for route in iter_route_contexts(list(routes)):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        path = route.path_format or ""
        for method in route.methods or ():
            operation = paths.get(path, {}).get(method.lower())
            if operation is not None:
                _complete_operation(operation, route, (method.lower(), path))
    _drop_unused(schema, _FASTAPI_VALIDATION)
    return schema


def install_openapi(app: FastAPI, tags: list[dict[str, Any]]) -> None:
    """Serve the completed document at ``/openapi.json``, built once like FastAPI's own."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
                tags=tags,
            )
            app.openapi_schema = complete_openapi(schema, app.routes)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

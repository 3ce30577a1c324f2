"""The OpenAPI document says what the API answers: the app's /openapi.json walked operation by
operation, and the derivation of each status checked on a small app of its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, File, Header, UploadFile
from fastapi.testclient import TestClient
from pydantic import BaseModel

from api.app import create_app
from api.auth import get_admin, get_caller, get_writer
from api.documents import spec_document
from api.openapi import MEDIA, PROBLEM_CONTENT, install_openapi
from api.problems import Problem
from tests.api.conftest import FakeBroker, make_settings

METHODS = ("get", "put", "post", "delete", "patch")


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home: Path = tmp_path_factory.mktemp("openapi")
    app = create_app(
        make_settings(home, f"sqlite:///{home / 'unused.db'}"),
        publish=FakeBroker().publish,
        run_dispatcher=False,
        check_broker=lambda: None,
    )
    answer = TestClient(app).get("/openapi.json")  # no lifespan: the database is never opened
    assert answer.status_code == 200
    found: dict[str, Any] = answer.json()
    return found


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield method.upper(), path, item[method]


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def test_every_operation_documents_the_errors_its_inputs_and_its_token_can_cause(
    document: dict[str, Any],
) -> None:
    missing = []
    for method, path, operation in operations(document):
        responses = operation["responses"]
        wanted = set()
        if operation.get("parameters") or "requestBody" in operation:
            wanted.add("422")
        if path.startswith("/v1/"):  # every /v1 route needs a token (api.app)
            wanted |= {"401", "429"}
        if any(p["in"] == "path" for p in operation.get("parameters", [])):
            wanted.add("404")
        if "requestBody" in operation:
            wanted.add("413")
        missing += [f"{method} {path}: {status}" for status in sorted(wanted - responses.keys())]
    assert not missing, missing
    assert len(list(operations(document))) > 30


def test_every_error_is_a_problem_document_and_a_304_has_no_body(document: dict[str, Any]) -> None:
    wrong = []
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            if status == "304":
                if "content" in response:
                    wrong.append(f"{method} {path}: 304 has a body")
            elif status[0] in "45" and response.get("content") != PROBLEM_CONTENT:
                wrong.append(f"{method} {path}: {status} is {sorted(response.get('content', {}))}")
            if not response.get("description"):
                wrong.append(f"{method} {path}: {status} has no description")
    assert not wrong, wrong
    problem = document["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail", "errors"} <= problem["properties"].keys()


def test_the_media_types_besides_json_are_documented(document: dict[str, Any]) -> None:
    for (method, path), media in MEDIA.items():
        success = document["paths"][path][method]["responses"]["200"]
        assert success["content"] == media, (method, path)
    events = document["paths"]["/v1/jobs/{job_id}/events"]["get"]["responses"]["200"]["content"]
    assert {"text/event-stream", "application/json"} <= events.keys()
    assert "text/plain" in document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    download = document["paths"]["/v1/artifacts/{artifact_id}"]["get"]["responses"]["200"]["content"]
    assert "application/octet-stream" in download


def test_every_reference_resolves_and_the_dashboard_is_not_an_operation(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    prefix = "#/components/schemas/"
    unresolved = {
        ref for ref in refs(document) if not ref.startswith(prefix) or ref[len(prefix) :] not in schemas
    }
    assert not unresolved
    assert "HTTPValidationError" not in schemas  # FastAPI's 422 body: this API answers a Problem
    assert set(document["paths"]) == {p for p in document["paths"] if p.startswith("/v1/")} | {
        "/healthz",
        "/readyz",
        "/metrics",
    }


class Thing(BaseModel):
    name: str


def small_app() -> FastAPI:
    """Routes that are never called: only their dependencies and parameters matter here."""
    app = FastAPI()

    @app.get("/open")
    def open_route() -> dict[str, str]:
        return {}

    @app.get("/mine", dependencies=[Depends(get_caller)])
    def mine() -> dict[str, str]:
        return {}

    @app.post("/things/{thing_id}", dependencies=[Depends(get_writer)])
    def write(thing_id: str, body: Thing) -> Thing:
        return body

    @app.delete("/teams/{name}", dependencies=[Depends(get_admin)], responses={409: {"model": Problem}})
    def remove(name: str) -> None:
        return None

    @app.post("/specs")
    def check(body: Annotated[Any, Depends(spec_document)]) -> dict[str, str]:
        return {}

    @app.post("/files")
    def upload(file: Annotated[UploadFile, File()]) -> dict[str, str]:
        return {}

    @app.get("/cached")
    def cached(tag: Annotated[str | None, Header(alias="If-None-Match")] = None) -> dict[str, str]:
        return {}

    install_openapi(app, [])
    return app


@pytest.mark.parametrize(
    ("method", "path", "statuses"),
    [
        ("get", "/open", {"200"}),
        ("get", "/mine", {"200", "401", "429", "503"}),
        ("post", "/things/{thing_id}", {"200", "400", "401", "403", "404", "413", "422", "429", "503"}),
        ("delete", "/teams/{name}", {"200", "401", "403", "404", "409", "422", "429", "503"}),
        ("post", "/specs", {"200", "413", "415", "422"}),
        ("post", "/files", {"200", "400", "413", "415", "422"}),
        ("get", "/cached", {"200", "304", "422"}),
    ],
)
def test_statuses_are_derived_from_dependencies_and_parameters(
    method: str, path: str, statuses: set[str]
) -> None:
    operation = small_app().openapi()["paths"][path][method]
    assert set(operation["responses"]) == statuses
    if path == "/specs":  # read by hand: the document still says what the body is
        body = operation["requestBody"]["content"]
        assert body["application/yaml"]["schema"] == {"$ref": "#/components/schemas/JobSpec"}
    if path == "/teams/{name}":
        assert operation["responses"]["409"]["content"] == PROBLEM_CONTENT

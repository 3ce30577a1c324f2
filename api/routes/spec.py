"""The job spec: its JSON Schema, a dry-run validation, and the examples as templates (the
dashboard's editor uses all three)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field

from api.auth import CallerDep
from api.deps import SessionDep, SettingsDep
from api.documents import spec_document
from api.problems import Problem
from api.validation import validate_spec
from core.spec import spec_schema
from domain.specs import check_spec

router = APIRouter(prefix="/v1/spec", tags=["catalog"])


class ValidSpec(BaseModel):
    spec: dict[str, Any] = Field(description="The spec as a job would store it: every default filled in.")


class Example(BaseModel):
    name: str = Field(description="The file's stem, e.g. mnist1d.")
    filename: str
    description: str = Field(description="The file's leading comment.")
    text: str = Field(description="The spec, as YAML.")


class ExampleList(BaseModel):
    items: list[Example]


@cache
def _schema() -> dict[str, Any]:
    return spec_schema()


@router.get("/schema", summary="The job spec's JSON Schema")
def get_spec_schema(response: Response) -> dict[str, Any]:
    response.headers["Cache-Control"] = "public, max-age=300"
    return _schema()


@router.post(
    "/validate",
    response_model=ValidSpec,
    summary="Check a spec without submitting it",
    responses={
        415: {"model": Problem, "description": "Neither application/json nor application/yaml."},
        422: {"model": Problem, "description": "Invalid spec, each problem naming its field."},
    },
)
def validate(
    body: Annotated[Any, Depends(spec_document)],
    session: SessionDep,
    caller: CallerDep,
    settings: SettingsDep,
) -> ValidSpec:
    """The checks `POST /v1/jobs` makes (the uploads it names and the service's resource limits
    included), with nothing stored: `200` with the normalized spec (a `teacher.from_job` filled in
    from that job), or the same `422` a submission would get."""
    spec = check_spec(session, caller, validate_spec(body), settings)  # from_job filled in
    return ValidSpec(spec=spec.model_dump(mode="json"))


def _description(text: str) -> str:
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.removeprefix("#").strip())
    return " ".join(filter(None, lines))


def read_examples(folder: Path) -> list[Example]:
    if not folder.is_dir():
        return []
    return [
        Example(name=path.stem, filename=path.name, description=_description(text), text=text)
        for path in sorted(folder.glob("*.yaml"))
        if (text := path.read_text())
    ]


@router.get("/examples", response_model=ExampleList, summary="Example specs, as templates")
def examples(settings: SettingsDep, response: Response) -> ExampleList:
    """The project's example specs (YAML, with their comments), for an editor to start from."""
    response.headers["Cache-Control"] = "private, max-age=300"
    return ExampleList(items=read_examples(settings.examples_path))

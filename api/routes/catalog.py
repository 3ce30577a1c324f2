"""What a spec can name, and the spec's JSON Schema (for editors and forms)."""

from __future__ import annotations

from functools import cache
from typing import Any

from fastapi import APIRouter, Response

from core.catalog import catalog
from core.spec import spec_schema

router = APIRouter(prefix="/v1", tags=["catalog"])


@cache
def _catalog() -> dict[str, Any]:
    return catalog()


@cache
def _schema() -> dict[str, Any]:
    return spec_schema()


@router.get("/catalog", summary="Every kind a spec can name")
def get_catalog(response: Response) -> dict[str, Any]:
    """Datasets, models (registry architectures, and TorchScript for teachers), losses,
    augmentations, optimizers, schedules, compressions and export formats, each with its
    description and parameters."""
    response.headers["Cache-Control"] = "public, max-age=300"
    return _catalog()


@router.get("/spec/schema", summary="The job spec's JSON Schema")
def get_spec_schema(response: Response) -> dict[str, Any]:
    response.headers["Cache-Control"] = "public, max-age=300"
    return _schema()

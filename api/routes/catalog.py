"""What a spec can name (for editors and forms)."""

from __future__ import annotations

from functools import cache
from typing import Any

from fastapi import APIRouter, Response

from core.catalog import catalog

router = APIRouter(prefix="/v1", tags=["catalog"])


@cache
def _catalog() -> dict[str, Any]:
    return catalog()


@router.get("/catalog", summary="Every kind a spec can name")
def get_catalog(response: Response) -> dict[str, Any]:
    """Datasets, models (registry architectures, and TorchScript for teachers), losses,
    augmentations, optimizers, schedules, compressions and export formats, each with its
    description and parameters."""
    response.headers["Cache-Control"] = "public, max-age=300"
    return _catalog()

"""The web dashboard: static files served by the API at ``/`` (no CDN, no build step).

The page is a small single-page app that talks to the same ``/v1`` API as the CLI, with the
token the user logs in with; the files themselves need no token.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).with_name("static")

router = APIRouter(include_in_schema=False)


@router.get("/")
def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


def static_files() -> StaticFiles:
    """Mounted at ``/ui``: scripts, styles and vendored libraries."""
    return StaticFiles(directory=STATIC)

"""The service's layers (DESIGN.md §2): routes and the admin CLI -> domain -> store.

Routes (``api/routes``) and ``distill admin`` (``cli/admin.py``) are adapters: they parse, call a
``domain`` function and render. They import no SQLAlchemy and, of the store, only the row types
(``store.models``), the ``Caller`` and the settings; they build no ORM row and run no query on a
session. ``domain`` imports nothing of the web (FastAPI, Starlette, ``api``); ``store`` imports none
of the layers above it. (``core`` has its own test: tests/core/test_layering.py.)
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from store import models

ROOT = Path(__file__).resolve().parents[1]
ADAPTERS = [*sorted((ROOT / "api" / "routes").glob("*.py")), ROOT / "cli" / "admin.py"]
STORE_ALLOWED = {"store.models": None, "store.settings": None, "store.identity": {"Caller"}}
"""Modules of the store an adapter may import (None: any name in it)."""
SESSION_CALLS = {"add", "add_all", "execute", "scalar", "scalars", "get", "query", "delete", "merge"}
ORM_ROWS = {
    name
    for name, obj in vars(models).items()
    if isinstance(obj, type) and issubclass(obj, models.Base) and obj is not models.Base
}
LAYERS = {
    "domain": {"fastapi", "starlette", "api", "worker", "cli", "client"},
    "store": {"domain", "api", "worker", "cli", "client", "fastapi", "starlette"},
}


def imports(tree: ast.AST) -> Iterator[tuple[str, list[str]]]:
    """(module, names imported from it) for every import, lazy ones inside functions included;
    ``from store import models`` counts as ``store.models``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in ("store", "domain"):
                for alias in node.names:
                    yield f"{node.module}.{alias.name}", []
            else:
                yield node.module, [alias.name for alias in node.names]


def _is_session(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return "session" in node.id
    return isinstance(node, ast.Attribute) and "session" in node.attr


def adapter_offences(source: str) -> list[str]:
    """What a route module or the admin CLI must not do, one line per offence, sorted."""
    tree = ast.parse(source)
    found, rows = [], set()
    for module, names in imports(tree):
        root = module.split(".")[0]
        if root == "sqlalchemy":
            found.append(f"imports {module}")
        elif root == "store":
            allowed = STORE_ALLOWED.get(module, set())
            if module not in STORE_ALLOWED or (allowed is not None and not set(names) <= allowed):
                found.append(f"imports {module} ({', '.join(names) or 'the module'})")
            if module == "store.models":
                rows |= set(names) & ORM_ROWS
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in rows:
            found.append(f"builds a row: {func.id}(...) (line {node.lineno})")
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            if func.value.id == "models" and func.attr in ORM_ROWS:
                found.append(f"builds a row: {func.attr}(...) (line {node.lineno})")
            elif func.attr in SESSION_CALLS and _is_session(func.value):
                found.append(f"calls session.{func.attr} (line {node.lineno})")
        elif isinstance(func, ast.Attribute) and func.attr in SESSION_CALLS and _is_session(func.value):
            found.append(f"calls session.{func.attr} (line {node.lineno})")
    return sorted(found)


def layer_offences(source: str, forbidden: set[str]) -> list[str]:
    return sorted(
        {f"imports {module}" for module, _ in imports(ast.parse(source)) if module.split(".")[0] in forbidden}
    )


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", ADAPTERS, ids=_relative)
def test_routes_and_the_admin_cli_are_adapters(path: Path) -> None:
    assert adapter_offences(path.read_text()) == []


WORKER = sorted((ROOT / "worker").glob("*.py"))


def worker_offences(source: str) -> list[str]:
    """The worker reaches the database through ``domain`` and ``store`` functions in its own unit
    of work (it may import ``store.db`` for that, and SQLAlchemy's exceptions to retry on), but it
    runs no query and builds no row itself."""
    return [
        found
        for found in adapter_offences(source)
        if not found.startswith(("imports sqlalchemy.exc", "imports store."))
    ]


@pytest.mark.parametrize("path", WORKER, ids=_relative)
def test_the_worker_runs_no_query_and_builds_no_row(path: Path) -> None:
    assert worker_offences(path.read_text()) == []


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_a_layer_imports_nothing_above_it(layer: str) -> None:
    offenders = {
        _relative(p): found
        for p in sorted((ROOT / layer).rglob("*.py"))
        if (found := layer_offences(p.read_text(), LAYERS[layer]))
    }
    assert offenders == {}


def test_the_rules_see_what_a_route_must_not_do() -> None:
    """The checks above pass because the code obeys them, not because they see nothing."""
    route = """
from sqlalchemy import select
from store.db import session_scope
from store.identity import Caller, create_team
from store.models import Job, Team
from store import quotas

def post(session, caller: Caller) -> Team:
    from store.jobs import add_event
    session.add(Job(name="j", spec={}))
    rows = session.scalars(select(Team))
    return session.get(Team, caller.team)
"""
    assert adapter_offences(route) == [
        "builds a row: Job(...) (line 10)",
        "calls session.add (line 10)",
        "calls session.get (line 12)",
        "calls session.scalars (line 11)",
        "imports sqlalchemy",
        "imports store.db (session_scope)",
        "imports store.identity (Caller, create_team)",
        "imports store.jobs (add_event)",
        "imports store.quotas (the module)",
    ]
    clean = """
from api.auth import CallerDep
from domain import access
from store.identity import Caller
from store.models import Team

def get(session, caller: Caller, headers: dict[str, str]) -> Team:
    headers.get("etag")
    return access.get_team(session, caller, "t").team
"""
    assert adapter_offences(clean) == []
    assert worker_offences(route) == [
        "builds a row: Job(...) (line 10)",
        "calls session.add (line 10)",
        "calls session.get (line 12)",
        "calls session.scalars (line 11)",
        "imports sqlalchemy",
    ]
    assert layer_offences("from fastapi import Request\nimport api.problems\n", LAYERS["domain"]) == [
        "imports api.problems",
        "imports fastapi",
    ]

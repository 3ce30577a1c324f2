"""core/ is a plain library (DESIGN.md §2): no web, queue or database package, nor the service's code."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "core"
FORBIDDEN = {
    "api",
    "worker",
    "store",
    "fastapi",
    "starlette",
    "uvicorn",
    "celery",
    "kombu",
    "redis",
    "sqlalchemy",
    "alembic",
    "httpx",
    "requests",
    "psycopg",
    "psycopg2",
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_imports_no_service_package() -> None:
    offenders = {
        str(p.relative_to(CORE)): sorted(imported_roots(p) & FORBIDDEN)
        for p in CORE.rglob("*.py")
        if imported_roots(p) & FORBIDDEN
    }
    assert offenders == {}

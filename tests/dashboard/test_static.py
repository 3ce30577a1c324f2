"""The dashboard's files: served by the API without a token, and self-contained (no CDN)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.dashboard import STATIC
from store.db import migrate
from tests.api.conftest import make_settings

# Anything that would make the browser fetch from elsewhere: src/href attributes, CSS url(),
# ES module imports, fetch() calls with an absolute http(s) or protocol-relative URL.
EXTERNAL = re.compile(
    r"""(?:\b(?:src|href)\s*=\s*["']?|url\(\s*["']?|\bfrom\s*["']|\bimport\s*\(?\s*["']|fetch\(\s*["'])"""
    r"""(?:https?:)?//""",
    re.IGNORECASE,
)
IMPORT = re.compile(r"""(?:\bfrom\s*|\bimport\s*\(\s*|^import\s+)["']([^"']+)["']""", re.MULTILINE)
ASSET = re.compile(r"""\b(?:src|href)="(ui/[^"]+)\"""")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    home = tmp_path_factory.mktemp("dashboard-static")
    url = f"sqlite:///{home / 'distillery.db'}"
    migrate(url)
    app = create_app(
        make_settings(home, url), publish=lambda *_: None, run_dispatcher=False, check_broker=lambda: None
    )
    with TestClient(app) as test_client:  # no Authorization header
        yield test_client


def files() -> list[Path]:
    return sorted(p for p in STATIC.rglob("*") if p.is_file())


def test_the_page_and_its_assets_need_no_token(client: TestClient) -> None:
    index = client.get("/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assets = ASSET.findall(index.text)
    assert {"ui/app.css", "ui/js/app.js", "ui/vendor/uPlot.iife.min.js", "ui/vendor/uPlot.min.css"} <= {
        *assets
    }
    for path in [*assets, *(f"ui/{p.relative_to(STATIC).as_posix()}" for p in files())]:
        r = client.get(f"/{path}")
        assert r.status_code == 200, path
        assert r.content, path
    script = client.get("/ui/js/app.js").headers["content-type"]
    assert script.startswith(("text/javascript", "application/javascript"))  # loadable as a module
    assert client.get("/v1/jobs").status_code == 401  # the API itself still needs one


def test_every_module_import_resolves_to_a_shipped_file() -> None:
    for path in (STATIC / "js").glob("*.js"):
        for target in IMPORT.findall(path.read_text()):
            assert target.startswith("./"), f"{path.name} imports {target!r}: only relative imports"
            assert (path.parent / target).resolve().is_file(), f"{path.name} imports a missing {target}"


@pytest.mark.parametrize("path", files(), ids=lambda p: p.relative_to(STATIC).as_posix())
def test_nothing_is_loaded_from_another_origin(path: Path) -> None:
    if path.suffix not in (".html", ".js", ".css"):
        return
    text = path.read_text(errors="replace")
    assert not EXTERNAL.findall(text), f"{path.name} loads something from outside the service"


def test_the_checker_sees_an_external_script() -> None:
    for bad in (
        '<script src="https://cdn.example.com/x.js"></script>',
        "<link href='//fonts.example.com/a.css'>",
        'import x from "https://esm.sh/uplot";',
        "body { background: url(http://example.com/a.png) }",
    ):
        assert EXTERNAL.search(bad), bad
    assert not EXTERNAL.search('<script src="ui/js/app.js"></script>')

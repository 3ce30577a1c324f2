"""The dashboard's files: served by the API without a token, and self-contained (no CDN)."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, ConsoleMessage, expect

from api.app import create_app
from api.dashboard import STATIC
from api.headers import DASHBOARD_CSP
from store.db import migrate, session_scope
from store.models import Metric
from store.pool import heartbeat
from tests.api.conftest import make_settings
from tests.api.support import TINY, move, new_member
from tests.dashboard.conftest import TOKEN_KEY, VIEWPORT
from tests.service import free_port

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


def test_every_response_forbids_framing_and_sniffing(client: TestClient) -> None:
    for path in ("/", "/ui/js/app.js", "/v1/jobs", "/healthz", "/docs"):
        headers = client.get(path).headers
        assert headers["x-content-type-options"] == "nosniff", path
        assert headers["x-frame-options"] == "DENY", path
    policy = client.get("/").headers["content-security-policy"]
    assert policy == DASHBOARD_CSP and "'unsafe-inline'" not in policy
    assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy
    assert client.get("/v1/jobs").headers["content-security-policy"].startswith("default-src 'none'")


INLINE = re.compile(r"""<script(?![^>]*\bsrc=)[^>]*>|\son[a-z]+\s*=|\sstyle\s*=|<style\b""", re.IGNORECASE)


def test_the_page_has_no_inline_script_or_style() -> None:
    """What the page's policy would block: inline scripts, on* handlers, style attributes."""
    html = (STATIC / "index.html").read_text()
    assert not INLINE.findall(html)
    for path in (STATIC / "js").glob("*.js"):
        assert not re.search(r"\.innerHTML\s*=", path.read_text()), path.name
        # h() sets a style object through the CSSOM; a style="" string would be refused
        assert not re.search(r"\bstyle:\s*[`'\"]", path.read_text()), path.name


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # in a thread: the test runner keeps its signals
        pass


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The API in a thread on a free port, with a finished job, its metrics and a worker."""
    home = tmp_path_factory.mktemp("dashboard-csp")
    url = f"sqlite:///{home / 'distillery.db'}"
    migrate(url)
    app = create_app(
        make_settings(home, url), publish=lambda *_: None, run_dispatcher=False, check_broker=lambda: None
    )
    port = free_port()
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    member = new_member(url)
    answer = httpx.post(f"{base}/v1/jobs", json={**TINY, "name": "csp-job"}, headers=member.headers)
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    move(url, job_id, "starting", "running")
    with session_scope(url) as session:
        for epoch in (1, 2, 3):
            for name, value in (("val/top1", 0.5 + epoch / 10), ("train/loss", 1 / epoch), ("lr", 0.01)):
                session.add(
                    Metric(job_id=job_id, stage="student", epoch=epoch, step=0, name=name, value=value)
                )
        heartbeat(session, "csp-worker", host="h", gpu_type="any", devices=[])
    move(url, job_id, "succeeded")
    yield base, member.token, job_id
    server.should_exit = True
    thread.join(timeout=10)


def test_the_pages_run_under_the_content_security_policy(browser: Browser, live: Any) -> None:
    """Each page, its charts (uPlot) and the editor's marks included, with no CSP violation
    and no console error: a blocked script or style fails this test."""
    base, token, job_id = live
    context = browser.new_context(viewport=VIEWPORT)
    context.add_init_script(
        f"localStorage.setItem('{TOKEN_KEY}', {json.dumps(token)}); window.violations = [];"
        "document.addEventListener('securitypolicyviolation', "
        "e => window.violations.push(`${e.violatedDirective} ${e.blockedURI}`));"
    )
    page = context.new_page()
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        # a refused request (the editor's 422 for a bad spec) is the page working, not a fault
        refused = message.text.startswith("Failed to load resource")
        if "Content Security Policy" in message.text or (message.type == "error" and not refused):
            problems.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda e: problems.append(str(e)))
    try:
        page.goto(f"{base}/#/jobs")
        expect(page.get_by_test_id("job-link")).to_have_text("csp-job")
        expect(page.locator(".progress-fill")).to_have_attribute("style", "width: 100%;")
        page.goto(f"{base}/#/jobs/{job_id}")
        expect(page.get_by_test_id("chart-accuracy")).to_have_attribute("data-points", '{"student":3}')
        page.goto(f"{base}/#/submit")
        editor = page.get_by_test_id("spec-editor")
        expect(editor).not_to_have_value("")
        editor.fill("name: x\nseed: -1\n")
        expect(page.get_by_test_id("marked-line").first).to_have_attribute("style", re.compile("top: "))
        page.goto(f"{base}/#/pool")
        expect(page.get_by_test_id("worker-row")).to_have_count(1)
        violations = page.evaluate("window.violations")
    finally:
        context.close()
    assert violations == [] and problems == [], (violations, problems)

"""The dashboard's files: served by the API without a token, and self-contained (no CDN)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, ConsoleMessage, expect

from api.app import create_app
from api.dashboard import STATIC
from api.headers import DASHBOARD_CSP
from store.db import migrate
from tests.api.conftest import make_settings
from tests.dashboard.conftest import TOKEN_KEY, VIEWPORT, Live

# Anything that would make the browser fetch from elsewhere: src/href attributes, CSS url(),
# ES module imports, fetch() calls with an absolute http(s) or protocol-relative URL.
EXTERNAL = re.compile(
    r"""(?:\b(?:src|href)\s*=\s*["']?|url\(\s*["']?|\bfrom\s*["']|\bimport\s*\(?\s*["']|fetch\(\s*["'])"""
    r"""(?:https?:)?//""",
    re.IGNORECASE,
)
# An ES module's imports: static ones and re-exports, at the start of a line (so that a comment
# quoting one does not count), and dynamic ones.
IMPORT = re.compile(
    r"""^\s*(?:import|export)\b[^;"']*?\bfrom\s*["']([^"']+)["']"""
    r"""|^\s*import\s*["']([^"']+)["']|\bimport\s*\(\s*["']([^"']+)["']""",
    re.MULTILINE,
)
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


def modules() -> list[Path]:
    """The page's ES modules: its own, and the vendored yaml library's (uPlot is a classic script)."""
    return sorted([*(STATIC / "js").rglob("*.js"), *(STATIC / "vendor" / "yaml").rglob("*.js")])


def test_every_module_import_resolves_to_a_shipped_file() -> None:
    assert (STATIC / "vendor" / "yaml" / "index.js") in modules()
    for path in modules():
        name = path.relative_to(STATIC).as_posix()
        for target in (t for match in IMPORT.findall(path.read_text()) for t in match if t):
            assert target.startswith(("./", "../")), f"{name} imports {target!r}: only relative imports"
            resolved = (path.parent / target).resolve()
            assert resolved.is_file(), f"{name} imports a missing {target}"
            assert resolved.is_relative_to(STATIC), f"{name} imports {target} from outside static/"


def test_the_vendored_libraries_are_pinned_with_their_licences() -> None:
    """package.json names exact versions, package-lock.json holds them with their hashes, and
    each library's licence ships beside it (vendor.sh copies them)."""
    root = STATIC.parent
    pinned = json.loads((root / "package.json").read_text())["dependencies"]
    locked = json.loads((root / "package-lock.json").read_text())["packages"]
    assert set(pinned) == {"uplot", "yaml"}
    for name, version in pinned.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name} {version}: pin an exact version"
        entry = locked[f"node_modules/{name}"]
        assert entry["version"] == version and entry["integrity"].startswith("sha512-"), name
    for licence in ("uPlot.LICENSE", "yaml/LICENSE"):
        assert (STATIC / "vendor" / licence).read_text().strip(), licence


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
    for path in (STATIC / "js").rglob("*.js"):
        assert not re.search(r"\.innerHTML\s*=", path.read_text()), path.name
        # h() sets a style object through the CSSOM; a style="" string would be refused
        assert not re.search(r"\bstyle:\s*[`'\"]", path.read_text()), path.name


def test_the_pages_run_under_the_content_security_policy(browser: Browser, live: Live) -> None:
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
        page.goto(f"{base}/#/compare?ids={job_id}")
        points = json.dumps({f"csp-job ({job_id[:6]})": 3}, separators=(",", ":"))
        expect(page.get_by_test_id("chart-compare-accuracy")).to_have_attribute("data-points", points)
        page.goto(f"{base}/#/submit")
        editor = page.get_by_test_id("spec-editor")
        expect(editor).not_to_have_value("")
        editor.fill("name: x\nseed: -1\n")
        mark = page.get_by_test_id("marked-line").first  # found by the vendored yaml module
        expect(mark).to_have_attribute("style", re.compile("top: "))
        expect(mark).to_have_attribute("data-line", "2")
        page.goto(f"{base}/#/pool")
        expect(page.get_by_test_id("worker-row")).to_have_count(1)
        violations = page.evaluate("window.violations")
    finally:
        context.close()
    assert violations == [] and problems == [], (violations, problems)

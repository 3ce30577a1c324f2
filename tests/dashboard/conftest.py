"""Browser tests of the dashboard: headless Chromium (Debian's, never a downloaded one) driven
by Playwright against a real service (API + one worker, the embedded default), or against the
API alone in a thread (``live``) where no job needs to run.

Every page visited is saved under ``test-artifacts/screenshots/`` (the run's artifacts)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
import uvicorn
from playwright.sync_api import Browser, Page, ViewportSize, expect, sync_playwright

from api.app import create_app
from store.db import migrate, session_scope
from store.models import Metric
from store.pool import heartbeat
from store.settings import Settings
from tests.api.conftest import make_settings
from tests.api.support import TINY, move, new_member
from tests.service import TINY_JOB, Service, free_port, running

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
TOKEN_KEY = "distillery.token"  # where static/js/api.js keeps the token
TIMEOUT_MS = 15_000  # for each wait on the page: generous, the machine may be busy training

expect.set_options(timeout=TIMEOUT_MS)


def launch(playwright: Any) -> Browser:
    if not CHROMIUM.exists():
        pytest.fail(
            f"the dashboard tests need Debian's chromium at {CHROMIUM} (`make browser`, or "
            "`apt-get install chromium`); they never download Playwright's own browsers"
        )
    browser: Browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
    return browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One browser per module, not per session: Playwright's sync API marks an event loop as running on
    the main thread for as long as it is open, and every ``asyncio.run``/``anyio.run`` in a later module
    would fail ("cannot be called from a running event loop")."""
    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running(tmp_path_factory.mktemp("dashboard")) as svc:
        yield svc


@pytest.fixture(scope="module")
def finished_jobs(service: Service) -> list[dict[str, Any]]:
    """Two tiny jobs that differ in their distillation losses, run to the end."""
    specs = [
        {**TINY_JOB, "name": "dash-kd"},
        {
            **TINY_JOB,
            "name": "dash-kd-ce",
            "distill": {
                "epochs": 3,
                "batch_size": 50,
                "losses": [{"kind": "kd", "weight": 0.7, "temperature": 2.0}, {"kind": "ce", "weight": 0.3}],
            },
        },
    ]
    ids = [submit(service, spec)["id"] for spec in specs]
    jobs = [service.wait_for(job_id) for job_id in ids]
    assert all(j["status"] == "succeeded" for j in jobs), service.all_logs()
    return jobs


def submit(service: Service, spec: dict[str, Any]) -> dict[str, Any]:
    r = service.http.post("/v1/jobs", json=spec)
    assert r.status_code == 202, r.text
    job: dict[str, Any] = r.json()
    return job


class Errors(list[str]):
    """JavaScript errors a page raised: a test fails on any."""


@pytest.fixture
def page(browser: Browser, service: Service) -> Iterator[Page]:
    """A fresh browser profile, logged in as ``e2e-user`` (the token in localStorage)."""
    context = browser.new_context(viewport=VIEWPORT)
    token = json.dumps(service.tokens["e2e-user"])
    # before the app's scripts run, on the first page load only (logging out must stick)
    context.add_init_script(
        f"if (!sessionStorage.getItem('seeded')) {{ localStorage.setItem('{TOKEN_KEY}', {token}); "
        "sessionStorage.setItem('seeded', '1'); }"
    )
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors = Errors()
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def screenshot(page: Page, name: str, *, full_page: bool = True) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # in a thread: the test runner keeps its signals
        pass


@contextlib.contextmanager
def api_in_thread(settings: Settings) -> Iterator[str]:
    """The API (no worker, no dispatcher) served in a thread on a free port: its base URL."""
    app = create_app(settings, publish=lambda *_: None, run_dispatcher=False, check_broker=lambda: None)
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class Live(NamedTuple):
    """The API alone, in a thread: its URL, a member's token and a finished job of theirs."""

    base: str
    token: str
    job_id: str


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """The API in a thread on a free port (SQLite, no worker), with a finished job, its metrics
    and a worker's heartbeat: enough for every page to show something, in a second."""
    home = tmp_path_factory.mktemp("dashboard-live")
    url = f"sqlite:///{home / 'distillery.db'}"
    migrate(url)
    with api_in_thread(make_settings(home, url)) as base:
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
        yield Live(base, member.token, job_id)

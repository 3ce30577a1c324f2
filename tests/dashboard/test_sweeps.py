"""The sweeps pages (#/sweeps, #/sweeps/<id>) against the real API in a thread, with sweeps made
through POST /v1/sweeps and moved by the real driver (``advance``, Optuna in the database) while
the test plays the worker: it moves the trial jobs, records their student curves and reports an
epoch to the pruner, as tests/api/test_sweeps.py does. No training runs, so it takes seconds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from domain.sweeps import TrialPruning, advance
from store.db import migrate, session_scope
from store.models import Job
from store.settings import Settings
from tests.api.conftest import make_settings
from tests.api.support import TINY, Member, move, new_member
from tests.api.test_sweeps import keep_shared_stages, prune, succeed, trial_jobs
from tests.dashboard.conftest import TOKEN_KEY, VIEWPORT, api_in_thread, screenshot
from tests.reports import REPORT, report

TEMPERATURE = "distill.losses.0.temperature"
LR = "distill.optimizer.lr"
# each trial's student curve (val/top1 per epoch): its objective is the best epoch's value
CURVES = {0: [0.5, 0.7, 0.6], 2: [0.4, 0.8, 0.9], 3: [0.6, 0.65, 0.62]}


def trial_report(curve: list[float]) -> dict[str, Any]:
    """The tests' hand-made report, its student's best epoch the curve's (what the objective reads)."""
    best = max(range(len(curve)), key=lambda i: curve[i]) + 1
    return report(student={**REPORT["student"], "best_epoch": best})


@dataclass(frozen=True)
class Api:
    base: str
    settings: Settings
    member: Member


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """The API in a thread, no worker and no dispatcher: the test calls the driver itself."""
    home = tmp_path_factory.mktemp("dashboard-sweeps")
    url = f"sqlite:///{home / 'distillery.db'}"
    migrate(url)
    settings = make_settings(home, url)
    with api_in_thread(settings) as base:
        yield Api(base, settings, new_member(url))


def start_sweep(api: Api, name: str, **changes: Any) -> dict[str, Any]:
    losses = [{"kind": "kd", "weight": 1.0, "temperature": 4.0}]
    body = {
        "name": name,
        "base": {**TINY, "distill": {"epochs": 3, "losses": losses}},
        "params": {TEMPERATURE: [1.0, 4.0], LR: [0.001, 0.01]},
        "method": "grid",
        "max_concurrent": 4,
        "early_stopping": "asha",
    } | changes
    r = httpx.post(f"{api.base}/v1/sweeps", json=body, headers=api.member.headers)
    assert r.status_code == 202, r.text
    sweep: dict[str, Any] = r.json()
    return sweep


@pytest.fixture(scope="module")
def finished(api: Api) -> dict[str, Any]:
    """A grid of 4 trials: 3 completed (trial 2 the best, with a full report), 1 pruned at epoch 1."""
    sweep_id = start_sweep(api, "sweep-done")["id"]
    db = api.settings.db_url
    first = trial_jobs(db, sweep_id)[0]
    keep_shared_stages(db, first, api.member.team)
    move(db, first.id, "starting", "running")
    advance(api.settings, sweep_id)
    jobs = trial_jobs(db, sweep_id)
    assert [j.trial for j in jobs] == [0, 1, 2, 3]
    for job in jobs:
        if job.trial in CURVES:
            succeed(db, job, CURVES[job.trial])
    with session_scope(db) as session:  # whole reports, as the engine writes them
        for job in jobs:
            if job.trial in CURVES:
                session.get(Job, job.id).report = trial_report(CURVES[job.trial])  # type: ignore[union-attr]
    pruning = TrialPruning.for_job(db, jobs[1].id)
    assert pruning is not None
    pruning("student", 1, {"val/top1": 0.2})  # what the worker reports before the pruner stops it
    prune(db, jobs[1])
    advance(api.settings, sweep_id)
    sweep: dict[str, Any] = httpx.get(f"{api.base}/v1/sweeps/{sweep_id}", headers=api.member.headers).json()
    assert sweep["status"] == "succeeded" and sweep["best"]["number"] == 2, sweep
    return sweep


def open_page(browser: Browser, api: Api) -> tuple[Page, list[str]]:
    context = browser.new_context(viewport=VIEWPORT)
    context.add_init_script(f"localStorage.setItem('{TOKEN_KEY}', {json.dumps(api.member.token)});")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    return page, errors


def numbers(page: Page) -> list[str]:
    return page.get_by_test_id("trial-row").evaluate_all("rows => rows.map(r => r.dataset.trial)")


def test_the_sweep_page_lists_sorts_plots_and_reports(
    browser: Browser, api: Api, finished: dict[str, Any]
) -> None:
    page, errors = open_page(browser, api)
    try:
        page.goto(f"{api.base}/#/jobs")
        page.get_by_test_id("nav-sweeps").click()
        link = page.locator(f'[data-sweep-id="{finished["id"]}"]').get_by_test_id("sweep-link")
        expect(link).to_have_text("sweep-done")
        expect(page.locator(f'[data-sweep-id="{finished["id"]}"] [data-testid=sweep-best]')).to_have_text(
            "90.00%"
        )
        screenshot(page, "sweeps-list")
        link.click()

        expect(page.get_by_test_id("sweep-status")).to_have_text("succeeded")
        expect(page.get_by_test_id("trial-row")).to_have_count(4)
        assert numbers(page) == ["0", "1", "2", "3"]
        pruned = page.locator("[data-testid=trial-row][data-trial='1']")
        expect(pruned.get_by_test_id("trial-status")).to_have_text("pruned")
        expect(pruned.get_by_test_id("pruned-at")).to_have_text(" at epoch 1")
        # its value at the epoch it was stopped, not an objective to rank it by
        expect(pruned.get_by_test_id("trial-objective")).to_have_text("(20.00% at epoch 1)")
        best = page.locator("[data-testid=trial-row][data-trial='2']")
        expect(best.get_by_test_id("trial-objective")).to_have_text("90.00%")
        assert page.locator("table.trials thead th").all_text_contents()[2:4] == ["temperature", "lr"]

        # the objective, best first (a pruned trial has none: last), then the other way round
        page.get_by_test_id("sort-objective").click()
        expect(page.get_by_test_id("trial-row").first).to_have_attribute("data-trial", "2")
        assert numbers(page) == ["2", "0", "3", "1"]
        assert "sort=objective" in page.url and "dir=desc" in page.url
        page.get_by_test_id("sort-objective").click()
        expect(page.get_by_test_id("trial-row").first).to_have_attribute("data-trial", "3")
        assert numbers(page) == ["3", "0", "2", "1"]
        page.reload()  # the order is in the address bar
        expect(page.get_by_test_id("trial-row").first).to_have_attribute("data-trial", "3")

        # one plot per parameter, a point per completed trial, the best one marked
        plots = page.get_by_test_id("sweep-plot")
        expect(plots).to_have_count(2)
        for path in (TEMPERATURE, LR):
            plot = page.locator(f'[data-testid=sweep-plot][data-param="{path}"]')
            expect(plot.locator("circle")).to_have_count(3)
            expect(plot.locator("circle.best")).to_have_attribute("data-trial", "2")

        # the best trial's report, drawn by the job page's report view
        best_report = page.get_by_test_id("best-report")
        best_job = f"#/jobs/{finished['best_job_id']}"
        expect(best_report.get_by_test_id("best-job")).to_have_attribute("href", best_job)
        expect(best_report.get_by_test_id("verdict")).to_have_text(REPORT["verdict"])
        expect(best_report.get_by_test_id("kd-gain")).to_have_text("+0.223 ± 0.019")
        expect(page.get_by_test_id("best-value")).to_have_text("90.00%")
        importances = page.get_by_test_id("importances").or_(page.get_by_test_id("importances-note"))
        expect(importances).to_be_visible()
        screenshot(page, "sweep-page")

        # the jobs list shows the pruned trial with its own badge
        page.goto(f"{api.base}/#/jobs")
        pruned_row = page.locator("[data-testid=job-row][data-status=pruned]")
        expect(pruned_row.locator(".badge.status-pruned")).to_have_count(1)
    finally:
        page.context.close()
    assert errors == []


def test_cancel_ends_a_live_sweep(browser: Browser, api: Api) -> None:
    sweep = start_sweep(api, "sweep-live")
    first = trial_jobs(api.settings.db_url, sweep["id"])[0]
    move(api.settings.db_url, first.id, "starting", "running")
    page, errors = open_page(browser, api)
    page.on("dialog", lambda d: d.accept())
    try:
        page.goto(f"{api.base}/#/sweeps/{sweep['id']}")
        expect(page.get_by_test_id("sweep-status")).to_have_text("running")
        # the first sweep kept the team's teacher and baseline: every trial started at once
        expect(page.get_by_test_id("trial-row")).to_have_count(4)
        expect(page.get_by_test_id("best-report")).to_contain_text("No trial has completed yet")
        page.get_by_test_id("cancel-sweep").click()
        expect(page.get_by_test_id("sweep-status")).to_have_text("cancelled")
        expect(page.get_by_test_id("cancel-sweep")).to_have_count(0)
        # its running trial is asked to stop (the worker would end it cancelled), the others end
        statuses = page.get_by_test_id("trial-status")
        expect(statuses).to_have_text(["cancelling", "cancelled", "cancelled", "cancelled"])
    finally:
        page.context.close()
    assert errors == []
    shown = httpx.get(f"{api.base}/v1/sweeps/{sweep['id']}", headers=api.member.headers).json()
    assert shown["status"] == "cancelled"

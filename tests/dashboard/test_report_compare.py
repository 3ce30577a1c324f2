"""The job page shows issue 13's report parts from a real engine report: the KD gain over paired
seeds with its interval, and every candidate model in one table and two scatter plots (accuracy
against size and against CPU latency) with the Pareto front named."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from playwright.sync_api import Browser, Route, expect

from core.runner import run_job
from core.spec import parse_spec
from tests.core.test_runner import TINY
from tests.dashboard.conftest import TOKEN_KEY, VIEWPORT, Live, screenshot


@pytest.fixture(scope="module")
def engine_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny job with two seeds and the teacher compressed beside the student, run by the engine."""
    out = tmp_path_factory.mktemp("report-compare")
    spec = parse_spec(
        {
            **TINY,
            "repeats": 2,
            "student": {"model": {"kind": "mlp", "hidden": [8]}},
            "distill": {**TINY["distill"], "epochs": 2},
            "export": ["safetensors"],
            "compress": [{"kind": "dynamic_int8"}, {"kind": "prune", "amount": 0.5}, {"kind": "teacher"}],
            "runtime": {"measure_speed": True},
        }
    )
    report = run_job(spec, out / "job", data_root=out / "data", device="cpu")
    data: dict[str, Any] = report.model_dump(mode="json")
    return data


def test_the_job_page_shows_the_seeds_and_the_candidates(
    browser: Browser, live: Live, engine_report: dict[str, Any]
) -> None:
    base, token, job_id = live

    def with_report(route: Route) -> None:  # the live job, given the engine's report
        response = route.fetch()
        if response.status != 200:
            route.fulfill(response=response)
            return
        route.fulfill(response=response, json={**response.json(), "report": engine_report})

    context = browser.new_context(viewport=VIEWPORT)
    context.add_init_script(f"localStorage.setItem('{TOKEN_KEY}', {json.dumps(token)});")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.route(re.compile(rf"/v1/jobs/{job_id}$"), with_report)
    try:
        page.goto(f"{base}/#/jobs/{job_id}")
        expect(page.get_by_test_id("verdict")).to_have_text(engine_report["verdict"])

        rp = engine_report["repeats"]
        expect(page.get_by_test_id("repeat-row")).to_have_count(2)
        interval = page.get_by_test_id("repeats-interval")
        low, high = (
            f"{'+' if v >= 0 else '−'}{abs(v * 100):.2f} pt" for v in (rp["ci95_low"], rp["ci95_high"])
        )
        expect(interval).to_contain_text(f"[{low}, {high}]")

        candidates = engine_report["candidates"]
        names = [c["name"] for c in candidates]
        assert "teacher+prune+fine_tune" in names
        rows = page.get_by_test_id("candidate-row")
        expect(rows).to_have_count(len(candidates))
        for c in candidates:
            row = page.locator(f'[data-testid=candidate-row][data-name="{c["name"]}"]')
            expect(row.get_by_test_id("test-top1")).to_have_text(f"{c['test_top1'] * 100:.2f}%")
            expect(row.get_by_test_id("pareto")).to_have_text("yes" if c["pareto"] else "")
        front = sorted(c["name"] for c in candidates if c["pareto"])
        for plot in ("size", "latency"):
            scatter = page.get_by_test_id(f"scatter-{plot}")
            expect(scatter.locator("circle")).to_have_count(len(candidates))
            labels = scatter.get_by_test_id("pareto-label")
            expect(labels).to_have_count(len(front))
            assert sorted(labels.all_text_contents()) == front
        page.get_by_test_id("candidates").scroll_into_view_if_needed()
        screenshot(page, "job-report-candidates")
    finally:
        context.close()
    assert errors == []


def test_a_report_without_latencies_draws_the_size_plot_only(
    browser: Browser, live: Live, engine_report: dict[str, Any]
) -> None:
    base, token, job_id = live
    candidates = [
        {k: v for k, v in c.items() if k != "latency_ms_cpu_b1"} for c in engine_report["candidates"]
    ]
    report = {**engine_report, "candidates": candidates, "repeats": {**engine_report["repeats"], "k": 1}}

    def with_report(route: Route) -> None:
        response = route.fetch()
        route.fulfill(response=response, json={**response.json(), "report": report})

    context = browser.new_context(viewport=VIEWPORT)
    context.add_init_script(f"localStorage.setItem('{TOKEN_KEY}', {json.dumps(token)});")
    page = context.new_page()
    page.route(re.compile(rf"/v1/jobs/{job_id}$"), with_report)
    try:
        page.goto(f"{base}/#/jobs/{job_id}")
        expect(page.get_by_test_id("candidate-row")).to_have_count(len(candidates))
        expect(page.get_by_test_id("scatter-size")).to_be_visible()
        expect(page.get_by_test_id("scatter-latency")).to_have_count(0)
        expect(page.get_by_test_id("repeats-note")).to_contain_text("no confidence interval")
    finally:
        context.close()

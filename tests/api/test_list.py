"""The jobs list: summaries with the headline result, and ETags decided cheaply."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.routes import jobs as jobs_routes
from store.settings import Settings
from tests.api.support import move, spec, unique
from tests.reports import REPORT, report


def test_the_jobs_list_gives_summaries_with_the_headline_result(
    client: TestClient, settings: Settings
) -> None:
    name = unique("summary")
    job = client.post("/v1/jobs", json=spec(name=name)).json()
    stored = report(
        teacher={**REPORT["teacher"], "test_top1": 0.97},
        baseline={**REPORT["baseline"], "test_top1": 0.63},
        student={**REPORT["student"], "test_top1": 0.855, "best_epoch": 41},
        kd_gain=0.225,
        kd_gain_stderr=0.019,
    )
    move(settings.db_url, job["id"], "starting", "running", "succeeded", report=stored)
    item = client.get("/v1/jobs", params={"name": name}).json()["items"][0]
    assert "spec" not in item and "report" not in item  # those are on GET /v1/jobs/{id}
    assert item["result"] == {
        "student_top1": 0.855,
        "baseline_top1": 0.63,
        "teacher_top1": 0.97,
        "kd_gain": 0.225,
        "kd_gain_stderr": 0.019,
        "best_epoch": 41,
    }
    whole = client.get(f"/v1/jobs/{job['id']}").json()
    assert whole["report"] == stored and whole["result"] == item["result"] and whole["spec"]


def test_a_stored_report_the_model_no_longer_reads_costs_its_report_not_a_500(
    client: TestClient, settings: Settings
) -> None:
    name = unique("oldreport")
    job = client.post("/v1/jobs", json=spec(name=name)).json()
    move(settings.db_url, job["id"], "starting", "running", "succeeded", report={"student": "not a stage"})
    listed = client.get("/v1/jobs", params={"name": name})
    assert listed.status_code == 200, listed.text
    item = listed.json()["items"][0]
    assert item["status"] == "succeeded" and item["result"] is None
    whole = client.get(f"/v1/jobs/{job['id']}")
    assert whole.status_code == 200, whole.text
    assert whole.json()["report"] is None and whole.json()["spec"]["name"] == name


def test_the_lists_304_is_decided_before_any_summary_is_built(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = unique("cheap304")
    client.post("/v1/jobs", json=spec(name=name))
    tag = client.get("/v1/jobs", params={"name": name}).headers["ETag"]

    def refuse(*_args: object) -> None:
        raise AssertionError("a summary was built for a 304")

    monkeypatch.setattr(jobs_routes, "job_summary", refuse)
    unchanged = client.get("/v1/jobs", params={"name": name}, headers={"If-None-Match": tag})
    assert unchanged.status_code == 304

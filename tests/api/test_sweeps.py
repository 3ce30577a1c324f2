"""Sweeps through the API, on SQLite and PostgreSQL: validation, team isolation, the driver's
passes (the first trial alone until the shared stages are kept, the budget, telling Optuna how
trials ended), list, show and cancel. Jobs are moved by hand as a worker would; tests/e2e runs
sweeps on real workers."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.spec import JobSpec
from core.stagekeys import shared_stages
from domain.sweeps import advance
from store import stages as kept
from store.db import session_scope
from store.jobs import record_metrics, transition
from store.models import Job, JobStatus
from store.settings import Settings
from tests.api.support import PROBLEM, Member, move, new_member, spec, unique

TEMPERATURE = "distill.losses.0.temperature"
WEIGHT = "distill.losses.0.weight"


def sweep_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": unique("sweep"),
        "base": spec(),
        "params": {TEMPERATURE: [1.0, 2.0, 4.0], WEIGHT: [0.5, 1.0]},
        "method": "grid",
        "max_concurrent": 2,
        "early_stopping": "asha",
    }
    return body | changes


def fields(response: Any) -> dict[str, str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    return {e["field"]: e["message"] for e in response.json()["errors"]}


def trial_jobs(db_url: str, sweep_id: str) -> list[Job]:
    with session_scope(db_url) as session:
        rows = session.query(Job).filter(Job.sweep_id == sweep_id).order_by(Job.trial).all()
        session.expunge_all()
    return rows


def succeed(db_url: str, job: Job, val_top1: list[float]) -> None:
    """The trial's student recorded these validation top-1s, one per epoch, and it succeeded."""
    if job.status == JobStatus.QUEUED:
        move(db_url, job.id, "starting", "running")
    with session_scope(db_url) as session:
        for epoch, value in enumerate(val_top1, 1):
            record_metrics(session, job.id, "student", epoch, epoch * 10, {"val/top1": value})
    best = max(range(len(val_top1)), key=lambda i: val_top1[i]) + 1
    move(db_url, job.id, "succeeded", report={"student": {"best_epoch": best}})


def prune(db_url: str, job: Job) -> None:
    move(db_url, job.id, "starting", "running")
    with session_scope(db_url) as session:
        assert transition(
            session,
            job.id,
            (JobStatus.RUNNING,),
            JobStatus.PRUNED,
            error={"type": "pruned", "message": "pruned by ASHA at student epoch 1"},
        )


def keep_shared_stages(db_url: str, job: Job, team: str) -> None:
    """What the worker does once the first trial trained its teacher and baseline."""
    with session_scope(db_url) as session:
        for stage, key in shared_stages(JobSpec.model_validate(job.spec)).items():
            kept.keep(session, team=team, key=key, stage=stage, job_id=job.id, files={})


# ---------------------------------------------------------------- create and validate


def test_a_grid_sweep_starts_with_its_first_trial_alone(client: TestClient, db_url: str) -> None:
    response = client.post("/v1/sweeps", json=sweep_body())
    assert response.status_code == 202, response.text
    sweep = response.json()
    assert response.headers["Location"] == f"/v1/sweeps/{sweep['id']}"
    assert sweep["status"] == "running" and sweep["max_trials"] == 6  # the grid's size
    assert [t["number"] for t in sweep["trials"]] == [0]
    trial = sweep["trials"][0]
    assert trial["status"] == "queued" and set(trial["params"]) == {TEMPERATURE, WEIGHT}
    job = client.get(f"/v1/jobs/{trial['job_id']}").json()
    assert job["name"] == f"{sweep['name']}-t0"
    # the job's spec is the base spec with the trial's values
    assert job["spec"]["distill"]["losses"][0]["temperature"] == trial["params"][TEMPERATURE]
    assert job["spec"]["distill"]["epochs"] == 3
    assert sweep["importances"] is None and "2 completed" in sweep["importances_note"]
    # the jobs list names the sweep and filters on it
    listed = client.get("/v1/jobs", params={"sweep": sweep["id"]}).json()["items"]
    assert [(j["id"], j["sweep"], j["trial"]) for j in listed] == [(trial["job_id"], sweep["id"], 0)]


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"params": {"distill.nope": [1, 2]}}, "params.distill.nope", "no such field"),
        ({"params": {"distill.losses": [1]}}, "params.distill.losses", "not a value"),
        ({"params": {TEMPERATURE: {"low": 1, "high": 8}}}, f"params.{TEMPERATURE}", "ranges need"),
        ({"params": {TEMPERATURE: [2.0, -1.0]}}, f"params.{TEMPERATURE}.1", "-1.0 is refused"),
        (
            {"params": {"name": {"low": 1, "high": 2}}, "method": "random", "max_trials": 3},
            "params.name",
            "number",
        ),
        ({"method": "tpe"}, "max_trials", "required"),
        ({"max_concurrent": 0}, "max_concurrent", "greater than or equal to 1"),
        ({"max_trials": 1000}, "max_trials", "less than or equal to 200"),
        ({"early_stopping": "hyperband"}, "early_stopping.kind", "asha"),
        ({"base": spec(distill={"epochs": 0})}, "base.distill.epochs", "greater than or equal to 1"),
        ({"params": {}}, "params", "at least 1"),
        ({"surprise": 1}, "surprise", "Extra inputs"),
    ],
)
def test_a_bad_request_is_a_422_naming_the_field(
    client: TestClient, changes: dict[str, Any], field: str, words: str
) -> None:
    found = fields(client.post("/v1/sweeps", json=sweep_body(**changes)))
    assert field in found, found
    assert words in found[field], found


def test_a_range_on_a_log_scale_is_checked_at_both_ends(client: TestClient) -> None:
    body = sweep_body(
        params={"distill.optimizer.lr": {"low": 0, "high": 0.1, "log": True}}, method="random", max_trials=3
    )
    assert "log range" in fields(client.post("/v1/sweeps", json=body))["params.distill.optimizer.lr"]
    body["params"] = {"distill.optimizer.lr": {"low": 1e-4, "high": 0.1, "log": True}}
    response = client.post("/v1/sweeps", json=body)
    assert response.status_code == 202, response.text
    lr = response.json()["trials"][0]["params"]["distill.optimizer.lr"]
    assert 1e-4 <= lr <= 0.1


# ---------------------------------------------------------------- isolation


def test_another_team_neither_sees_nor_cancels_a_sweep(
    client: TestClient, db_url: str, settings: Settings
) -> None:
    sweep = client.post("/v1/sweeps", json=sweep_body()).json()
    other: Member = new_member(db_url)
    assert client.get(f"/v1/sweeps/{sweep['id']}").status_code == 200
    for method, path in (("GET", ""), ("POST", "/cancel")):
        response = client.request(method, f"/v1/sweeps/{sweep['id']}{path}", headers=other.headers)
        assert response.status_code == 404 and response.headers["content-type"].startswith(PROBLEM)
    theirs = client.get("/v1/sweeps", headers=other.headers).json()["items"]
    assert sweep["id"] not in [s["id"] for s in theirs]
    trials = client.get("/v1/jobs", params={"sweep": sweep["id"]}, headers=other.headers)
    assert trials.status_code == 200 and trials.json()["items"] == []
    assert sweep["id"] in [s["id"] for s in client.get("/v1/sweeps").json()["items"]]


def test_the_list_pages_with_a_cursor(client: TestClient) -> None:
    made = [client.post("/v1/sweeps", json=sweep_body()).json()["id"] for _ in range(3)]
    first = client.get("/v1/sweeps", params={"limit": 2}).json()
    second = client.get("/v1/sweeps", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    listed = [s["id"] for s in first["items"] + second["items"]]
    assert listed[:3] == made[::-1]
    assert first["items"][0]["trials_by_status"] == {"queued": 1}
    assert client.get("/v1/sweeps", params={"cursor": "junk"}).status_code == 422


# ---------------------------------------------------------------- the driver


def test_the_driver_waits_for_the_shared_stages_then_fills_the_budget(
    client: TestClient, db_url: str, settings: Settings, member: Member
) -> None:
    sweep = client.post("/v1/sweeps", json=sweep_body(max_concurrent=2)).json()
    first = trial_jobs(db_url, sweep["id"])[0]
    move(db_url, first.id, "starting", "running")
    advance(settings, sweep["id"])
    assert len(trial_jobs(db_url, sweep["id"])) == 1  # its teacher is not kept yet
    assert "first trial" in client.get(f"/v1/sweeps/{sweep['id']}").json()["message"]

    keep_shared_stages(db_url, first, member.team)
    advance(settings, sweep["id"])
    jobs = trial_jobs(db_url, sweep["id"])
    assert [j.trial for j in jobs] == [0, 1]  # max_concurrent: 2 live at once

    assert jobs[0].status == JobStatus.RUNNING
    succeed(db_url, jobs[0], [0.5, 0.7, 0.6])
    prune(db_url, jobs[1])
    advance(settings, sweep["id"])
    jobs = trial_jobs(db_url, sweep["id"])
    assert [j.trial for j in jobs] == [0, 1, 2, 3]
    for job, curve in zip(jobs[2:], ([0.4, 0.8, 0.9], [0.3, 0.3, 0.2]), strict=True):
        succeed(db_url, job, curve)
    advance(settings, sweep["id"])
    for job in trial_jobs(db_url, sweep["id"])[4:]:
        move(db_url, job.id, "starting", "failed", error={"type": "internal", "message": "boom"})
    advance(settings, sweep["id"])

    done = client.get(f"/v1/sweeps/{sweep['id']}").json()
    assert done["status"] == "succeeded" and done["finished_at"] is not None
    by_number = {t["number"]: t for t in done["trials"]}
    assert len(by_number) == 6
    assert by_number[0]["objective"] == pytest.approx(0.7)  # at the student's best epoch
    assert by_number[1]["status"] == "pruned" and by_number[1]["objective"] is None
    assert by_number[4]["status"] == "failed" and "boom" in by_number[4]["error"]
    assert done["best"]["number"] == 2 and done["best_value"] == pytest.approx(0.9)
    assert done["best_job_id"] == by_number[2]["job_id"]
    assert "6 trial(s): 3 completed, 1 pruned, 2 failed" in done["message"]
    # every grid point once
    points = {(t["params"][TEMPERATURE], t["params"][WEIGHT]) for t in done["trials"]}
    assert len(points) == 6
    assert done["importances"] is not None or done["importances_note"]

    # the best trial again with 3 seeds: an ordinary job of the team, the trial's spec but repeats
    again = client.post(f"/v1/sweeps/{sweep['id']}/repeat", json={"repeats": 3})
    assert again.status_code == 202, again.text
    job = again.json()
    assert again.headers["Location"] == f"/v1/jobs/{job['id']}" and job["status"] == "queued"
    best_spec = next(j for j in trial_jobs(db_url, sweep["id"]) if j.id == done["best_job_id"]).spec
    assert job["spec"]["repeats"] == 3 and job["spec"]["distill"] == best_spec["distill"]
    assert client.post(f"/v1/sweeps/{sweep['id']}/repeat", json={"repeats": 1}).status_code == 422


def test_an_invalid_combination_fails_its_trial_and_the_sweep_goes_on(
    client: TestClient, db_url: str, settings: Settings
) -> None:
    # each value is valid alone; both weights 0 together is not a loss
    losses = [{"kind": "kd", "weight": 1.0, "temperature": 4.0}, {"kind": "ce", "weight": 1.0}]
    body = sweep_body(
        base=spec(distill={"epochs": 3, "losses": losses}),
        params={WEIGHT: [0.0, 1.0], "distill.losses.1.weight": [0.0, 1.0]},
        max_concurrent=4,
    )
    sweep = client.post("/v1/sweeps", json=body)
    assert sweep.status_code == 202, sweep.text
    sweep_id = sweep.json()["id"]
    first = trial_jobs(db_url, sweep_id)[0]
    succeed(db_url, first, [0.5])
    advance(settings, sweep_id)
    shown = client.get(f"/v1/sweeps/{sweep_id}").json()
    assert len(shown["trials"]) == 4 and len(trial_jobs(db_url, sweep_id)) == 3
    (invalid,) = [t for t in shown["trials"] if t["status"] == "invalid"]
    assert invalid["job_id"] is None and "refused" in invalid["error"]
    assert invalid["params"] == {WEIGHT: 0.0, "distill.losses.1.weight": 0.0}


# ---------------------------------------------------------------- cancel


def test_a_sweep_without_a_completed_trial_has_no_best_to_repeat(client: TestClient) -> None:
    sweep = client.post("/v1/sweeps", json=sweep_body()).json()
    r = client.post(f"/v1/sweeps/{sweep['id']}/repeat")
    assert r.status_code == 409 and r.headers["content-type"].startswith(PROBLEM), r.text
    assert "no completed trial" in r.json()["detail"]


def test_cancel_ends_the_sweep_and_its_live_trials(
    client: TestClient, db_url: str, settings: Settings, member: Member
) -> None:
    sweep = client.post("/v1/sweeps", json=sweep_body(max_concurrent=3)).json()
    first = trial_jobs(db_url, sweep["id"])[0]
    keep_shared_stages(db_url, first, member.team)
    move(db_url, first.id, "starting", "running")
    advance(settings, sweep["id"])
    assert len(trial_jobs(db_url, sweep["id"])) == 3

    response = client.post(f"/v1/sweeps/{sweep['id']}/cancel")
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "cancelled"
    statuses = {j.trial: j.status for j in trial_jobs(db_url, sweep["id"])}
    assert statuses == {0: "cancelling", 1: "cancelled", 2: "cancelled"}  # the running one is asked
    advance(settings, sweep["id"])
    assert len(trial_jobs(db_url, sweep["id"])) == 3  # no trial starts any more
    again = client.post(f"/v1/sweeps/{sweep['id']}/cancel")
    assert again.status_code == 409 and again.json()["type"].endswith("sweep-finished")

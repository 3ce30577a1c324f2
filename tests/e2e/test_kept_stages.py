"""Teachers and baselines trained once per team (issue 13, point 1), through the running service:
a second identical job reuses its team's kept stages, another team's does not, ``from_job``
asks for one explicitly, and a kept stage outlives the job that trained it while a job uses it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests.service import TERMINAL, TINY_JOB, Service

JOB = {**TINY_JOB, "export": ["safetensors"]}


def _wait(service: Service, client: httpx.Client, job_id: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", timeout=10).json()
        if job["status"] in TERMINAL:
            return job  # type: ignore[no-any-return]
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s\n{service.all_logs()}")


def _run(service: Service, client: httpx.Client, spec: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/v1/jobs", json=spec, timeout=30)
    assert r.status_code == 202, r.text
    done = _wait(service, client, r.json()["id"])
    assert done["status"] == "succeeded", (done["error"], service.all_logs())
    return done


def _events(client: httpx.Client, job_id: str) -> list[str]:
    history = client.get(f"/v1/jobs/{job_id}/events", params={"format": "json"}, timeout=10).json()
    return [e["message"] for e in history["items"]]


def _stages_trained(client: httpx.Client, job_id: str) -> set[str]:
    page = client.get(f"/v1/jobs/{job_id}/metrics", params={"limit": 1000}, timeout=10).json()
    return {m["stage"] for m in page["items"]}


def _kept_files(home: Path) -> list[Path]:
    return sorted(p for p in home.rglob("stages/*/model.safetensors") if "artifacts" in p.parts)


def test_a_teams_second_identical_job_reuses_its_teacher_and_baseline(service: Service) -> None:
    service.start_api()
    service.start_worker()
    team = service.http
    first = _run(service, team, JOB)
    assert _stages_trained(team, first["id"]) == {"teacher", "baseline", "student", "student.plain"}
    assert any("stage teacher: kept" in m for m in _events(team, first["id"]))

    second = _run(
        service, team, {**JOB, "distill": {**JOB["distill"], "losses": [{"kind": "kd", "temperature": 2}]}}
    )
    said = _events(team, second["id"])
    assert any(f"stage teacher: reused from job {first['id']}" in m for m in said), said
    assert any(f"stage baseline: reused from job {first['id']}" in m for m in said), said
    # no teacher or baseline epochs ran: the two students only (transfer set or not)
    assert _stages_trained(team, second["id"]) == {"student", "student.plain"}
    # the same teacher weights: the same test accuracy, and no time spent on it
    assert second["report"]["teacher"]["test_top1"] == first["report"]["teacher"]["test_top1"]
    assert second["report"]["timing"]["teacher_s"] < first["report"]["timing"]["teacher_s"]

    other = service.add_member("outsider", "other-team")
    third = _run(service, other, JOB)
    assert not any("reused" in m for m in _events(other, third["id"]))
    assert _stages_trained(other, third["id"]) == {"teacher", "baseline", "student", "student.plain"}

    refused = other.post("/v1/jobs", json={**JOB, "teacher": {"from_job": first["id"]}}, timeout=30)
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["field"] == "teacher.from_job"


def test_from_job_reuses_a_teacher_that_outlives_the_job_that_trained_it(service: Service) -> None:
    service.start_api()
    service.start_worker()
    team = service.http
    first = _run(service, team, {**JOB, "baseline": {"enabled": False}})
    kept = _kept_files(service.home)
    assert len(kept) == 1  # the teacher: the baseline was not trained

    # from_job alone: model, training and data come from that job; a different seed is fine
    spec = {**JOB, "seed": 7, "baseline": {"enabled": False}, "teacher": {"from_job": first["id"]}}
    second = _run(service, team, spec)
    assert second["spec"]["teacher"]["model"] == first["spec"]["teacher"]["model"]
    assert any(f"reused from job {first['id']}" in m for m in _events(team, second["id"]))

    conflicting = {**spec, "teacher": {"from_job": first["id"], "model": {"kind": "cnn1d", "channels": 8}}}
    r = team.post("/v1/jobs", json=conflicting, timeout=30)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "teacher.model", r.text
    r = team.post("/v1/jobs", json={**spec, "teacher": {"from_job": "nosuchjob"}}, timeout=30)
    assert r.status_code == 422 and "no job nosuchjob" in r.text

    # deleting the job that trained it: the teacher stays, the second job still uses it
    assert team.delete(f"/v1/jobs/{first['id']}", timeout=30).status_code == 204
    assert _kept_files(service.home) == kept
    third = _run(service, team, {**spec, "teacher": {"from_job": second["id"]}})
    assert any(f"reused from job {first['id']}" in m for m in _events(team, third["id"]))

    # once no job uses it, it goes
    for job in (second, third):
        assert team.delete(f"/v1/jobs/{job['id']}", timeout=30).status_code == 204
    assert _kept_files(service.home) == []
    r = team.post("/v1/jobs", json={**spec, "teacher": {"from_job": third["id"]}}, timeout=30)
    assert r.status_code == 422, r.text

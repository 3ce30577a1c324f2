"""One attempt at a job, driven in this process: the paths that need no training."""

from __future__ import annotations

from pathlib import Path

import pytest

from store.db import session_scope
from store.models import Job
from store.settings import Settings
from tests.worker.support import TINY, Deployment, claims, get_job, insert_job
from worker.tasks import Attempt, DatabaseUnavailable, _json_safe


def test_nothing_to_claim_does_nothing(deployment: Deployment) -> None:
    job_id = insert_job(deployment.db_url, TINY, status="succeeded", attempt=1)
    assert Attempt(deployment.settings, job_id, "host:1").run() == "skipped"
    assert Attempt(deployment.settings, "no-such-job", "host:1").run() == "skipped"
    job = get_job(deployment.db_url, job_id)
    assert (job.status, job.attempt) == ("succeeded", 1)
    assert claims(deployment.db_url, job_id) == 0


def test_a_bad_spec_fails_before_any_training(deployment: Deployment) -> None:
    job_id = insert_job(deployment.db_url, TINY, placed_on="host", devices=[0])  # handed to "host"
    with session_scope(deployment.db_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.spec = {**job.spec, "distill": {"epochs": -1}}
    assert Attempt(deployment.settings, job_id, "host:1").run() == "failed"
    job = get_job(deployment.db_url, job_id)
    assert job.error is not None and job.error["type"] == "bad_spec" and "epochs" in job.error["message"]
    assert job.attempt == 1 and job.finished_at is not None


def test_an_unreachable_database_is_not_the_job_s_fault(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url="postgresql+psycopg://postgres@127.0.0.1:1/none")
    with pytest.raises(DatabaseUnavailable):
        Attempt(settings, "some-job", "host:1").run()


def test_artifact_files_keep_distinct_names(deployment: Deployment, tmp_path: Path) -> None:
    settings = deployment.settings.model_copy(update={"work_dir": tmp_path / "work"})
    attempt = Attempt(settings, "job1", "host:1")
    files = {
        "student_torchscript": "student.torchscript.pt",
        "teacher_safetensors": "stages/teacher/model.safetensors",
        "baseline_safetensors": "stages/baseline/model.safetensors",
        "escape": "../outside.txt",  # never uploaded: outside the job's directory
        "missing": "nowhere.bin",
    }
    for rel in files.values():
        path = attempt.out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel != "nowhere.bin":
            path.write_bytes(rel.encode())
    rows = attempt._upload(files)
    assert {r["name"]: r["filename"] for r in rows} == {
        "student_torchscript": "student.torchscript.pt",
        "teacher_safetensors": "teacher-model.safetensors",
        "baseline_safetensors": "baseline-model.safetensors",
    }
    assert all(r["location"].endswith(f"job1/{r['filename']}") for r in rows)


def test_reports_are_stored_as_strict_json() -> None:
    report = {"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": 0.5, "e": "x"}}
    assert _json_safe(report) == {"a": None, "b": [1.0, None], "c": {"d": 0.5, "e": "x"}}

"""`distill` client commands as real processes against a running service (API + one worker,
SQLite and the file broker), started once for the module."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from safetensors.numpy import save_file

from tests.service import DISTILL, TINY_JOB, Service, free_port, running

LONG_JOB = {**TINY_JOB, "name": "cli-long", "distill": {"epochs": 200, "batch_size": 50}}


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running(tmp_path_factory.mktemp("service")) as service:
        yield service


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def cli_env(home: Path, **settings: str) -> dict[str, str]:
    """The user's environment: no DISTILLERY_* of the service, a config folder of its own, and no
    COLUMNS (on a pipe the CLI then prints tables 140 wide, so ids and rows are never wrapped)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DISTILLERY_") and k not in ("COLUMNS", "LINES")
    }
    return env | {"HOME": str(home), "XDG_CONFIG_HOME": str(home / "config"), **settings}


def distill(env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 240) -> Ran:
    done = subprocess.run(
        [DISTILL, *args], env=env, input=stdin, capture_output=True, text=True, timeout=timeout
    )
    assert "Traceback" not in done.stderr, done.stderr
    return Ran(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def env(svc: Service, home: Path) -> dict[str, str]:
    return cli_env(home, DISTILLERY_URL=svc.url, DISTILLERY_TOKEN=svc.tokens["e2e-user"])


@pytest.fixture(scope="module")
def spec_file(home: Path) -> Path:
    path = home / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY_JOB, "name": "cli-tiny"}))
    return path


@pytest.fixture(scope="module")
def finished(env: dict[str, str], spec_file: Path) -> tuple[Ran, str]:
    """`distill submit --wait` of the tiny job: its run, and the job's id."""
    ran = distill(env, "submit", str(spec_file), "--wait")
    match = re.search(r"submitted job ([0-9a-f]{32})", ran.err)
    assert match, ran.err
    return ran, match.group(1)


def test_submit_wait_follows_the_job_and_prints_the_report(finished: tuple[Ran, str], svc: Service) -> None:
    ran, job_id = finished
    assert ran.code == 0, ran.err
    job = svc.http.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["name"] == "cli-tiny"
    report = job["report"]
    assert report["verdict"] in ran.out
    assert f"{report['student']['test_top1']:.4f}" in ran.out
    assert f"{report['baseline']['test_top1']:.4f}" in ran.out
    assert f"{report['kd_gain']:+.4f} ± {report['kd_gain_stderr']:.4f}" in ran.out
    assert "fewer parameters" in ran.out and f"{report['teacher']['params']:,}" in ran.out
    # the live view, on a pipe: one line per change, and the job's events
    assert "succeeded" in ran.err and "stage student: 4 epochs" in ran.err


def test_list_shows_the_job_in_a_table_and_as_json(finished: tuple[Ran, str], env: dict[str, str]) -> None:
    _, job_id = finished
    table = distill(env, "list")
    assert table.code == 0 and re.search(rf"{job_id}\s+cli-tiny\s+succeeded\s+top-1", table.out)
    listed = distill(env, "list", "--json", "--name", "TINY", "--status", "succeeded")
    assert listed.code == 0 and listed.err == ""
    assert job_id in {j["id"] for j in listed.json()}
    assert job_id not in {j["id"] for j in distill(env, "list", "--json", "--status", "failed").json()}


def test_show_prints_the_details_report_and_artifacts(
    finished: tuple[Ran, str], env: dict[str, str], svc: Service
) -> None:
    _, job_id = finished
    shown = distill(env, "show", job_id)
    assert shown.code == 0
    assert job_id in shown.out and re.search(r"owner\s+e2e-user \(team e2e\)", shown.out)
    assert "KD gain" in shown.out and "student_torchscript" in shown.out
    as_json = distill(env, "show", job_id, "--json").json()
    assert as_json == svc.http.get(f"/v1/jobs/{job_id}").json()


def test_metrics_as_json_are_the_api_rows_and_as_tables_per_stage(
    finished: tuple[Ran, str], env: dict[str, str], svc: Service
) -> None:
    _, job_id = finished
    rows = distill(env, "metrics", job_id, "--json").json()
    api_rows = svc.http.get(f"/v1/jobs/{job_id}/metrics", params={"limit": 10000}).json()["items"]
    assert rows == api_rows and {("student", 4), ("teacher", 5)} <= {(r["stage"], r["epoch"]) for r in rows}
    student = distill(env, "metrics", job_id, "--stage", "student", "--name", "val/top1", "--json").json()
    assert [r["epoch"] for r in student] == [1, 2, 3, 4] and {r["name"] for r in student} == {"val/top1"}
    table = distill(env, "metrics", job_id, "--stage", "student")
    last = next(r for r in student if r["epoch"] == 4)["value"]
    assert "val/top1" in table.out and f"{last:.4g}" in table.out


def test_download_writes_the_student_files_with_their_checksums(
    finished: tuple[Ran, str], env: dict[str, str], svc: Service, tmp_path: Path
) -> None:
    _, job_id = finished
    listed = svc.http.get(f"/v1/jobs/{job_id}/artifacts").json()["items"]
    students = {a["name"]: a for a in listed if a["name"].startswith("student")}
    assert {"student_torchscript", "student_safetensors"} <= set(students)
    ran = distill(env, "download", job_id, "--out", str(tmp_path / "students"))
    assert ran.code == 0, ran.err
    for artifact in students.values():
        path = tmp_path / "students" / artifact["filename"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == artifact["sha256"]
        assert path.stat().st_size == artifact["size"] and artifact["sha256"] in ran.out
    assert sorted(p.name for p in (tmp_path / "students").iterdir()) == sorted(
        a["filename"] for a in students.values()
    )

    one = distill(env, "download", job_id, "-a", "report", "-o", str(tmp_path / "r"), "--json").json()
    assert [(d["name"], Path(d["path"]).name) for d in one] == [("report", "report.json")]
    assert json.loads(Path(one[0]["path"]).read_text())["name"] == "cli-tiny"
    missing = distill(env, "download", job_id, "-a", "student_onnx", "-o", str(tmp_path / "x"))
    assert missing.code == 5 and "student_torchscript" in missing.err  # the names it does have


def test_follow_a_finished_job_prints_its_report(finished: tuple[Ran, str], env: dict[str, str]) -> None:
    _, job_id = finished
    ran = distill(env, "follow", job_id, "--quiet")
    assert ran.code == 0 and "KD gain" in ran.out


def test_cancel_then_delete_a_long_job(env: dict[str, str], svc: Service, home: Path) -> None:
    spec = home / "long.json"
    spec.write_text(json.dumps(LONG_JOB))
    submitted = distill(env, "submit", str(spec), "--json")
    assert submitted.code == 0, submitted.err
    job_id = submitted.json()["id"]
    live = distill(env, "delete", job_id, "--yes")
    assert live.code == 7 and "cancel it first" in live.err

    cancelled = distill(env, "cancel", job_id)
    assert cancelled.code == 0 and re.search(rf"job {job_id} (cancelling|cancelled)", cancelled.out)
    assert svc.http.get(f"/v1/jobs/{job_id}").json()["status"] in ("cancelling", "cancelled")
    followed = distill(env, "follow", job_id)  # to its end: cancelled is not success
    assert followed.code == 1 and "cancelled" in followed.err
    assert svc.http.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
    again = distill(env, "cancel", job_id)
    assert again.code == 7 and "already cancelled" in again.err

    assert distill(env, "delete", job_id).code == 2  # no terminal to confirm on, no --yes
    deleted = distill(env, "delete", job_id, "--yes")
    assert deleted.code == 0 and f"job {job_id} deleted" in deleted.out
    gone = distill(env, "show", job_id)
    assert gone.code == 5 and "does not exist" in gone.err


def test_pool_as_json_shows_the_worker(env: dict[str, str]) -> None:
    pool = distill(env, "pool", "--json")
    assert pool.code == 0
    workers = pool.json()["workers"]
    assert len(workers) == 1 and workers[0]["status"] == "online" and workers[0]["gpu_type"] == "any"
    assert "online" in distill(env, "pool").out


def test_uploads_print_the_spec_fragment(env: dict[str, str], tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.normal(size=(20, 8)).astype(np.float32),
        "y_train": rng.integers(0, 3, 20),
        "x_test": rng.normal(size=(10, 8)).astype(np.float32),
        "y_test": rng.integers(0, 3, 10),
    }
    np.savez(tmp_path / "small.npz", **arrays)  # type: ignore[arg-type]
    dataset = distill(env, "upload-dataset", str(tmp_path / "small.npz"), "--json")
    assert dataset.code == 0, dataset.err
    path = dataset.json()["path"]
    assert path.startswith("uploads/datasets/") and dataset.json()["spec_fragment"] == {
        "data": {"kind": "npz", "path": path}
    }

    save_file({"layer.weight": np.zeros((3, 8), np.float32)}, str(tmp_path / "teacher.safetensors"))
    arch = '{"kind": "mlp", "hidden": [16]}'
    model = distill(env, "upload-model", str(tmp_path / "teacher.safetensors"), "--architecture", arch)
    assert model.code == 0, model.err
    fragment = yaml.safe_load(model.out.split("use it in a job spec:", 1)[1])
    assert fragment["teacher"]["model"]["kind"] == "mlp"
    assert fragment["teacher"]["checkpoint"].startswith("uploads/models/")

    no_arch = distill(env, "upload-model", str(tmp_path / "teacher.safetensors"))
    assert no_arch.code == 6 and "architecture" in no_arch.err


def test_login_saves_a_private_config_and_logout_forgets_it(svc: Service, tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    token = svc.tokens["e2e-user"]
    refused = distill(env, "login", "--url", svc.url, "--token", "dst_wrong")
    assert refused.code == 4 and "unknown or has been revoked" in refused.err
    config = tmp_path / "config" / "distillery" / "client.json"
    assert not config.exists()

    logged_in = distill(env, "login", "--url", svc.url, stdin=token + "\n")  # a script pipes it in
    assert logged_in.code == 0 and "as e2e-user (team e2e, member)" in logged_in.out
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert json.loads(config.read_text()) == {"url": svc.url, "tokens": {svc.url: token}}

    me = distill(env, "whoami", "--json").json()  # the server and token from the file alone
    assert me["user"] == "e2e-user" and me["url"] == svc.url and me["token_from"] == "config file"
    assert distill(env, "list", "--json").code == 0

    assert distill(env, "logout").code == 0
    after = distill(env, "list")
    assert after.code == 4 and "distill login" in after.err


def test_an_unreachable_server_is_exit_3_with_its_url(home: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    ran = distill(cli_env(home, DISTILLERY_URL=url, DISTILLERY_TOKEN="dst_x"), "list")
    assert ran.code == 3 and f"cannot reach the Distillery server at {url}" in ran.err
    assert "URL from the environment" in ran.err and ran.out == ""


def test_a_bad_token_is_exit_4(svc: Service, home: Path) -> None:
    ran = distill(cli_env(home, DISTILLERY_URL=svc.url), "show", "x", "--token", "dst_not-a-token")
    assert ran.code == 4 and "refused the token" in ran.err and "unknown or has been revoked" in ran.err


def test_an_unknown_job_is_exit_5(env: dict[str, str]) -> None:
    for command in ("show", "metrics", "follow", "cancel"):
        ran = distill(env, command, "0" * 32)
        assert ran.code == 5 and f"job '{'0' * 32}' does not exist" in ran.err, (command, ran.err)


def test_an_invalid_spec_is_exit_6_naming_its_fields(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("student: {model: {kind: transformer}}\ndistill: {epochs: 0}\n")
    ran = distill(env, "submit", str(bad))
    assert ran.code == 6 and "invalid spec" in ran.err
    assert "student.model.kind: unknown kind 'transformer'" in ran.err and "distill.epochs:" in ran.err

    broken = distill(env, "submit", "-", stdin="name: [unclosed\n")
    assert broken.code == 6 and "not valid YAML" in broken.err
    absent = distill(env, "submit", str(tmp_path / "absent.yaml"))
    assert absent.code == 2 and "cannot read" in absent.err

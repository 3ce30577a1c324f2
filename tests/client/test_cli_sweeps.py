"""`distill sweep create|list|show|cancel` as real processes against a running service (API + one
worker, SQLite and the file broker: sweeps on the embedded default, Optuna's study in its file)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.client.test_cli import Ran, cli_env, distill
from tests.service import TINY_JOB, Service, running

TEMPERATURE = "distill.losses.0.temperature"


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running(tmp_path_factory.mktemp("service")) as service:
        yield service


@pytest.fixture(scope="module")
def env(svc: Service, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("home")
    return cli_env(home, DISTILLERY_URL=svc.url, DISTILLERY_TOKEN=svc.tokens["e2e-user"])


def request_file(tmp_path: Path, **changes: Any) -> Path:
    body = {
        "name": "cli-sweep",
        "base": {**TINY_JOB, "export": ["safetensors"]},
        "params": {TEMPERATURE: [2.0, 4.0]},
        "max_concurrent": 1,
        **changes,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def created(ran: Ran) -> dict[str, Any]:
    assert ran.code == 0, ran.err
    return json.loads(ran.out)  # type: ignore[no-any-return]


def test_create_show_and_list_a_sweep_to_its_end(env: dict[str, str], svc: Service, tmp_path: Path) -> None:
    sweep = created(distill(env, "sweep", "create", str(request_file(tmp_path)), "--json"))
    assert sweep["status"] == "running" and sweep["max_trials"] == 2
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        shown = svc.http.get(f"/v1/sweeps/{sweep['id']}").json()
        if shown["status"] != "running":
            break
        time.sleep(1)
    assert shown["status"] == "succeeded", svc.all_logs()

    table = distill(env, "sweep", "show", sweep["id"])
    assert table.code == 0, table.err
    assert "succeeded" in table.out and f"{shown['best']['objective']:.4f}" in table.out
    for trial in shown["trials"]:
        assert trial["job_id"] in table.out
    assert "temperature=2.0" in table.out and "temperature=4.0" in table.out
    as_json = created(distill(env, "sweep", "show", sweep["id"], "--json"))
    assert [t["number"] for t in as_json["trials"]] == [0, 1]
    # the jobs list narrows to the sweep's trials
    trials = created(distill(env, "list", "--sweep", sweep["id"], "--json"))
    assert sorted((j["trial"], j["id"]) for j in trials) == [
        (t["number"], t["job_id"]) for t in shown["trials"]
    ]
    assert {j["sweep"] for j in trials} == {sweep["id"]}

    listing = distill(env, "sweep", "list")
    assert listing.code == 0 and sweep["id"] in listing.out and "2/2" in listing.out
    assert sweep["id"] in {s["id"] for s in created(distill(env, "sweep", "list", "--json"))}
    # an ended sweep cannot be cancelled: exit 7 (conflict)
    ended = distill(env, "sweep", "cancel", sweep["id"])
    assert ended.code == 7 and "already succeeded" in ended.err
    # its best trial again with 2 seeds: a new job, printed by id
    again = distill(env, "sweep", "repeat", sweep["id"], "--repeats", "2")
    assert again.code == 0, again.err
    job = svc.http.get(f"/v1/jobs/{again.out.strip()}").json()
    assert job["spec"]["repeats"] == 2 and job["name"].endswith("-best-x2"), job


def test_cancel_and_the_errors_a_user_meets(env: dict[str, str], tmp_path: Path) -> None:
    long = {**TINY_JOB, "distill": {"epochs": 200, "batch_size": 50}}
    sweep = created(distill(env, "sweep", "create", str(request_file(tmp_path, base=long)), "--json"))
    cancelled = distill(env, "sweep", "cancel", sweep["id"])
    assert cancelled.code == 0 and f"sweep {sweep['id']} cancelled" in cancelled.out

    bad = distill(env, "sweep", "create", str(request_file(tmp_path, params={"distill.nope": [1]})))
    assert bad.code == 6 and "params.distill.nope" in bad.err
    missing = distill(env, "sweep", "show", "0" * 32)
    assert missing.code == 5
    unreadable = distill(env, "sweep", "create", str(tmp_path / "absent.yaml"))
    assert unreadable.code == 2 and "cannot read" in unreadable.err

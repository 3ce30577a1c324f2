"""`distill api --workers N` on PostgreSQL + Redis: several API processes behind one socket keep
every guarantee one process gave (jobs stored once, quotas exact under concurrent submissions, a
revoked token refused at once by every process, the dispatcher's passes never overlapping, a
job's event stream followed to its end)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.service import TINY_JOB, Service, base_env

pytestmark = pytest.mark.slow
PROCESSES = 3


@pytest.fixture
def several(pg_database: str, redis_db: str, tmp_path: Path) -> Iterator[Service]:
    env = base_env(tmp_path, DISTILLERY_DATABASE_URL=pg_database, DISTILLERY_BROKER_URL=redis_db)
    svc = Service(env=env, home=tmp_path)
    try:
        svc.start_api("--workers", str(PROCESSES))
        yield svc
    finally:
        svc.stop()


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.append(int(entry.name))
    return found


def test_several_api_processes_keep_the_guarantees(several: Service) -> None:
    assert several.api is not None
    assert f"{PROCESSES} API process(es)" in several.logs("api.log")
    # uvicorn's supervisor and its processes (each serving the shared socket)
    deadline = time.monotonic() + 60
    while len(children(several.api.pid)) < PROCESSES and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(children(several.api.pid)) >= PROCESSES, several.logs("api.log")

    # 60 submissions from 10 clients at once against a team that may queue 25: exactly 25 stored
    team = several.add_member("quota-user", "quota", max_queued=25)
    token = several.tokens["quota-user"]

    def post(i: int) -> int:
        with httpx.Client(base_url=several.url, headers={"Authorization": f"Bearer {token}"}) as c:
            return c.post("/v1/jobs", json={**TINY_JOB, "name": f"many-{i}"}, timeout=60).status_code

    with ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(post, range(60)))
    assert codes.count(202) == 25 and set(codes) <= {202, 409, 429}, codes
    listed = team.get("/v1/jobs", params={"limit": 200}).json()["items"]
    assert len(listed) == 25 and len({j["id"] for j in listed}) == 25

    # a revoked token is refused by whichever process answers, on its very next request
    me = team.get("/v1/me").json()
    assert several.admin.delete(f"/v1/tokens/{me['token_id']}").status_code == 204
    refused = [team.get("/v1/jobs").status_code for _ in range(30)]
    assert set(refused) == {401}, refused

    # a worker: the dispatchers of every process hand each job over once; its stream ends with it
    several.start_worker()
    job = several.http.post("/v1/jobs", json={**TINY_JOB, "name": "followed"}).json()
    seen: list[str] = []
    with several.http.stream("GET", f"/v1/jobs/{job['id']}/events", timeout=300) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:") and '"status"' in line:
                data = json.loads(line.removeprefix("data:"))
                seen.append(data.get("status") or data.get("to_status") or "")
                if data.get("status") in ("succeeded", "failed", "cancelled"):
                    break
    assert seen and seen[-1] == "succeeded", several.all_logs()
    events = several.http.get(f"/v1/jobs/{job['id']}/events", params={"format": "json"}).json()["items"]
    assert [e["kind"] for e in events].count("dispatched") == 1  # one pass handed it over
    assert [e.get("to_status") for e in events].count("starting") == 1

"""Shared pieces of the API benchmarks (``api_poll.py``, ``submit.py``): runs of ``wrk`` with their
percentiles and status counts, the PostgreSQL + Redis deployment (``distill api``, no worker), fresh
databases, a bare FastAPI app as the floor, and a team's queue filled with waiting jobs.

Only the public HTTP API, the ``distill`` command and its settings are used, plus plain SQL on the
``jobs`` and ``job_events`` tables to copy an API-submitted job when seeding (``clone_jobs``) and
to count what a benchmark stored.

    python bench/_api.py floor PORT     # the floor alone (what api_poll.py starts)
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from _service import EmbeddedService
from dispatch import SMALL_JOB

ROOT = Path(__file__).resolve().parents[1]
# the PostgreSQL server (its `postgres` database makes and drops the benchmark's) and Redis
PG_SERVER = os.environ.get("DISTILLERY_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
REDIS_SERVER = os.environ.get("DISTILLERY_BENCH_REDIS", "redis://127.0.0.1:6379")
# every request of a benchmark is one token's: its limit must not be what is measured
BENCH_RATE_LIMIT = "100000000/minute"
# No worker host serves this GPU type, on either deployment (the embedded one runs a CPU worker of
# type `any`): its jobs wait (reason `no_worker`) and nothing trains while the API is measured.
WAITING_QUEUE = "bench-unserved"
WAITING_SPEC: dict[str, Any] = {
    **SMALL_JOB,
    "name": "bench-waiting",
    "resources": {"gpus": 1, "gpu_type": WAITING_QUEUE},
}


def code_env() -> dict[str, str]:
    """The service runs the code of the tree this script is in (an exported older commit too),
    whatever the virtual environment's editable install points at."""
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)}


# ---------------------------------------------------------------- wrk


def need_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        print(
            "wrk (the HTTP load tool) is missing: install Debian's package with `sudo apt-get install wrk` "
            "(`make bench` does it when run as root)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return path


def _lua_string(text: str) -> str:
    level = "=" * 3
    assert f"]{level}]" not in text
    return f"[{level}[{text}]{level}]"


# Per-thread counts (statuses, requests issued) gathered in done() through thread:get, printed
# as one JSON line with the latency percentiles (microseconds).
_LUA_COMMON = """
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
statuses = {}
issued = 0
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local st, sent = {}, 0
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do st[k] = (st[k] or 0) + v end
    sent = sent + t:get("issued")
  end
  local parts = {}
  for k, v in pairs(st) do table.insert(parts, string.format('"%d":%d', k, v)) end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%.0f,"duration_us":%.0f,"connect":%.0f,"read":%.0f,"write":%.0f,'
    .. '"timeout":%.0f,"p50":%.0f,"p95":%.0f,"p99":%.0f,"max":%.0f,"issued":%.0f,"statuses":{%s}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max,
    sent, table.concat(parts, ",")))
end
"""


@dataclass
class WrkResult:
    requests: int  # answers read
    seconds: float
    statuses: dict[int, int]
    socket_errors: dict[str, int]  # connect, read, write, timeout
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    issued: int  # requests sent (counted only by scripts that build each request)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def count(self, status: int) -> int:
        return self.statuses.get(status, 0)

    def unexpected(self, expected: int) -> str:
        """What went wrong in this run, '' if every answer had the expected status."""
        bad = {s: n for s, n in sorted(self.statuses.items()) if s != expected}
        errors = {k: n for k, n in self.socket_errors.items() if n}
        parts = [f"{n} x {s}" for s, n in bad.items()] + [f"{n} socket {k} errors" for k, n in errors.items()]
        return ", ".join(parts)


def wrk(
    url: str,
    *,
    connections: int,
    seconds: float,
    headers: dict[str, str],
    method: str = "GET",
    body: str | None = None,
    unique: str | None = None,
) -> WrkResult:
    """One wrk run against ``url`` (two threads, or one for a single connection). With ``unique``,
    each request's ``body`` has that placeholder replaced by a name no other request has."""
    lines = [f"wrk.method = {_lua_string(method)}"]
    lines += [f"wrk.headers[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in headers.items()]
    if body is not None and unique is None:
        lines.append(f"wrk.body = {_lua_string(body)}")
    if body is not None and unique is not None:
        before, after = body.split(unique)
        lines += [
            f"local before, after = {_lua_string(before)}, {_lua_string(after)}",
            "function request()",
            "  issued = issued + 1",
            '  local name = "t" .. tid .. "-" .. issued',
            "  return wrk.format(nil, nil, nil, before .. name .. after)",
            "end",
        ]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write("\n".join(lines) + _LUA_COMMON)
    threads = min(2, connections)
    command = [need_wrk(), f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    command += ["--timeout", "30s", "-s", script.name, url]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 90)
    finally:
        os.unlink(script.name)
    found = [line for line in done.stdout.splitlines() if line.startswith("WRKJSON ")]
    if done.returncode != 0 or not found:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    raw = json.loads(found[-1].removeprefix("WRKJSON "))
    return WrkResult(
        requests=int(raw["requests"]),
        seconds=raw["duration_us"] / 1e6,
        statuses={int(k): int(v) for k, v in raw["statuses"].items()},
        socket_errors={k: int(raw[k]) for k in ("connect", "read", "write", "timeout")},
        p50_ms=raw["p50"] / 1000,
        p95_ms=raw["p95"] / 1000,
        p99_ms=raw["p99"] / 1000,
        max_ms=raw["max"] / 1000,
        issued=int(raw["issued"]),
    )


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(started: float, targets: list[str], findings: list[str]) -> None:
    """The end of a benchmark's output: its targets' verdicts, then what went wrong under load."""
    print(f"\ntargets ({time.monotonic() - started:.0f} s in all)")
    for line in targets:
        print(line)
    print("\nfindings" if findings else "\nfindings: none (no unexpected status, socket error or timeout)")
    for line in findings:
        print(f"- {line}")


# ---------------------------------------------------------------- databases


@contextmanager
def fresh_postgres(prefix: str) -> Iterator[str]:
    """The SQLAlchemy URL of a new, empty PostgreSQL database, dropped afterwards."""
    import psycopg

    try:
        admin = psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as e:
        raise SystemExit(f"PostgreSQL is not reachable at {PG_SERVER}: {e}") from e
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_SERVER.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@contextmanager
def redis_db(index: int) -> Iterator[str]:
    """A Redis database of its own (emptied before and after): the broker and the rate limits."""
    import redis

    client = redis.Redis.from_url(f"{REDIS_SERVER}/{index}")
    try:
        client.flushdb()
    except redis.RedisError as e:
        raise SystemExit(f"Redis is not reachable at {REDIS_SERVER}: {e}") from e
    try:
        yield f"{REDIS_SERVER}/{index}"
    finally:
        client.flushdb()
        client.close()


def _engine(db_url: str) -> Any:
    from sqlalchemy import create_engine

    return create_engine(db_url, connect_args={"timeout": 60} if db_url.startswith("sqlite") else {})


def count_rows(db_url: str, sql: str, **params: Any) -> tuple[Any, ...]:
    """One row of a read-only query on the service's database."""
    from sqlalchemy import text

    engine = _engine(db_url)
    try:
        with engine.connect() as conn:
            return tuple(conn.execute(text(sql), params).one())
    finally:
        engine.dispose()


# ---------------------------------------------------------------- deployments


class ApiService(EmbeddedService):
    """The PostgreSQL + Redis deployment's API: ``distill api [--workers N]`` in a temporary home,
    no worker host (jobs wait in the database; the API's dispatcher still runs)."""

    def __init__(self, db_url: str, broker_url: str, workers: int | None, **env: str) -> None:
        super().__init__(DISTILLERY_DATABASE_URL=db_url, DISTILLERY_BROKER_URL=broker_url, **env)
        self.db_url = db_url
        self.workers = workers

    def command(self, port: str) -> list[str]:
        command = [str(Path(sys.executable).with_name("distill")), "api", "--port", port]
        return command + (["--workers", str(self.workers)] if self.workers else [])

    def processes(self) -> str:
        """How many API processes it started, from its own start-up line."""
        found = re.findall(r"(\d+) API process", (self.home / "serve.log").read_text(errors="replace"))
        return found[-1] if found else "?"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def embedded_db_url(service: EmbeddedService) -> str:
    return f"sqlite:///{service.home / 'distillery.db'}"


class Floor:
    """A bare FastAPI app (one plain ``def`` endpoint returning a small dict) served the way
    ``distill api --workers 1`` serves the project: one process, the same uvicorn options."""

    path = "/v1/floor"

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="distillery-floor-"))
        self.url = f"http://127.0.0.1:{free_port()}"

    def __enter__(self) -> Floor:
        port = self.url.rsplit(":", 1)[1]
        log = (self.home / "floor.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "floor", port],
            env={**os.environ, **code_env()},
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log_text = (self.home / "floor.log").read_text()
                self.__exit__()
                raise SystemExit(f"the floor exited: {log_text}")
            try:
                if httpx.get(self.url + self.path).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.3)
        self.__exit__()
        raise SystemExit("the floor did not start")

    def options(self) -> str:
        text = (self.home / "floor.log").read_text(errors="replace")
        found = re.findall(r"^uvicorn options: (.*)$", text, re.M)
        return found[-1] if found else "?"

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        shutil.rmtree(self.home, ignore_errors=True)


def _project_uvicorn_options() -> tuple[dict[str, Any], str]:
    """The keyword arguments ``distill api --workers 1`` gives ``uvicorn.run``, read by calling
    ``cli.main._serve_api`` with ``uvicorn.run`` and the app factory replaced (so the floor follows
    any change there); the options of this commit if that no longer works."""
    import uvicorn

    captured: dict[str, Any] = {}
    why = "this commit's options (cli.main._serve_api passed none)"
    try:
        import api.app
        from cli import main as cli_main
        from store.settings import Settings

        names = [n for n in ("create_app", "create_served_app") if hasattr(api.app, n)]
        run, factories = uvicorn.run, {n: getattr(api.app, n) for n in names}
        uvicorn.run = lambda app, **kw: captured.update(kw)
        for n in names:
            setattr(api.app, n, lambda *a, **kw: None)
        try:
            with tempfile.TemporaryDirectory() as home:
                cli_main._serve_api(Settings(home=Path(home)), "127.0.0.1", 0, 1)
        finally:
            uvicorn.run = run
            for n, factory in factories.items():
                setattr(api.app, n, factory)
    except Exception as e:
        captured, why = {}, f"this commit's options (reading cli.main failed: {e!r})"
    if not captured:
        return {"log_level": "info", "timeout_keep_alive": 30}, why
    return captured, "read from cli.main._serve_api"


def serve_floor(port: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.get(Floor.path)
    def floor() -> dict[str, Any]:
        return {"id": "0" * 32, "status": "queued", "queue_position": 1, "version": 1}

    options, source = _project_uvicorn_options()
    options = {**options, "host": "127.0.0.1", "port": port}
    print(f"uvicorn options: {options} ({source})", flush=True)
    try:  # the project's processes settle their garbage collector (api.heap): the floor's too
        from api.heap import settle_for_serving
    except ImportError:  # a commit before it
        pass
    else:
        settle_for_serving()
        print("garbage collector: settled as the project's API processes settle it (api.heap)", flush=True)
    uvicorn.run(app, **options)


def cpu_rate(service: EmbeddedService, seconds: float = 1.0) -> float:
    """CPUs the service's processes use, over ``seconds``."""
    before = service.cpu_seconds()
    time.sleep(seconds)
    return (service.cpu_seconds() - before) / seconds


def settle(service: EmbeddedService, idle: float, timeout: float = 30) -> None:
    """Wait until the service has finished the requests of the last run (wrk's unanswered ones
    are still served after it disconnects): back to its ``idle`` CPU use (its dispatcher's)."""
    deadline = time.monotonic() + timeout
    while cpu_rate(service, 0.5) > 1.5 * idle + 0.1 and time.monotonic() < deadline:
        pass


def at_rest(service: EmbeddedService, timeout: float = 60) -> float:
    """The CPU the service uses with no request to serve (its dispatcher's passes), once its
    start-up is over (the embedded worker imports the engine): the first reading under a fifth of
    a CPU, else the lowest over ``timeout``."""
    deadline, lowest = time.monotonic() + timeout, math.inf
    while time.monotonic() < deadline:
        lowest = min(lowest, cpu_rate(service, 2.0))
        if lowest < 0.2:
            break
    return lowest


def log_problems(service: EmbeddedService, where: str, since: int = 0) -> tuple[list[str], int]:
    """What the service's log shows after offset ``since``: the exceptions of its tracebacks by
    type, and its 5xx answers; with the log's length, for the next call."""
    text = (service.home / "serve.log").read_text(errors="replace")
    raised: Counter[str] = Counter()
    in_traceback = False
    for line in text[since:].splitlines():
        if line.startswith("Traceback (most recent call last)"):
            in_traceback = True
        elif in_traceback and line and not line[0].isspace():
            raised[line.split(":")[0]] += 1
            in_traceback = False
    server_errors = sum(1 for line in text[since:].splitlines() if re.search(r'HTTP/1\.1" 5\d\d', line))
    found = [f"{where}: {n} tracebacks of {kind} in the service's log" for kind, n in raised.most_common()]
    if server_errors:
        found.append(f"{where}: {server_errors} 5xx answers in the service's access log")
    return found, len(text)


# ---------------------------------------------------------------- a team's queue


def open_team(service: EmbeddedService, team: str) -> httpx.Client:
    """A new team with one member whose queue has no limit; the API as that member."""
    client = service.member(team)
    r = service.admin.patch(f"/v1/teams/{team}", json={"max_queued": None})
    assert r.status_code == 200, r.text
    return client


def submit(client: httpx.Client, spec: dict[str, Any]) -> str:
    r = client.post("/v1/jobs", json=spec)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def submit_many(client: httpx.Client, count: int, name: str, threads: int = 8) -> list[str]:
    """``count`` jobs through the API, ``threads`` requests at a time."""
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda i: submit(client, {**WAITING_SPEC, "name": f"{name}-{i}"}), range(count)))


def clone_jobs(db_url: str, template_id: str, count: int) -> None:
    """``count`` copies of an API-submitted job and its events, in one transaction: every column
    copied (whatever the schema holds now) but the id, the name and the times, made just after
    the template's. What a submission writes elsewhere (an idempotency key, a cache) is not.
    PostgreSQL's statistics are brought up to date afterwards, as autovacuum would soon do."""
    from sqlalchemy import MetaData, insert, select

    engine = _engine(db_url)
    try:
        meta = MetaData()
        meta.reflect(engine, only=["jobs", "job_events"])
        jobs, events = meta.tables["jobs"], meta.tables["job_events"]
        with engine.begin() as conn:
            job = dict(conn.execute(select(jobs).where(jobs.c.id == template_id)).mappings().one())
            its_events = [
                {k: v for k, v in e.items() if k != "id"}
                for e in conn.execute(select(events).where(events.c.job_id == template_id)).mappings()
            ]
            for start in range(0, count, 1000):
                new_jobs, new_events = [], []
                for i in range(start, min(count, start + 1000)):
                    job_id, at = uuid.uuid4().hex, job["created_at"] + timedelta(microseconds=i + 1)
                    new_jobs.append(
                        {
                            **job,
                            "id": job_id,
                            "name": f"{job['name']}-{i}",
                            "created_at": at,
                            "updated_at": at,
                        }
                    )
                    new_events += [{**e, "job_id": job_id, "at": at} for e in its_events]
                conn.execute(insert(jobs), new_jobs)
                if new_events:
                    conn.execute(insert(events), new_events)
        if engine.dialect.name == "postgresql":
            # what autovacuum does within a minute of such an insert: without it, the planner still
            # believes the team has one job, and sorts all 10,000 to serve the list's first page
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("ANALYZE jobs, job_events")
    finally:
        engine.dispose()


@dataclass
class Seeded:
    probe: str  # the newest waiting job: the one polled
    how: str  # what was done, for the output
    warnings: list[str] = field(default_factory=list)


def fill_queue(
    service: EmbeddedService, client: httpx.Client, db_url: str, total: int, how: str, name: str
) -> Seeded:
    """Bring the team's waiting jobs (all in ``WAITING_QUEUE``) up to ``total``: through the API
    (``how='api'``, eight requests at a time), or one job through the API and the rest as its
    copies (``'clone'``); the last job always through the API (``probe``). Then wait until the
    probe shows its place (``queue_position == total``)."""
    waiting = int(service.admin.get(f"/v1/teams/{client_team(client)}").json()["usage"]["queued"])
    todo = total - waiting
    assert todo >= 1, (total, waiting)
    t0 = time.monotonic()
    if how == "api" or todo <= 50:
        submit_many(client, todo - 1, name)
        done = f"{todo} jobs through the API"
    else:
        template = submit(client, {**WAITING_SPEC, "name": name})
        clone_jobs(db_url, template, todo - 2)
        done = f"1 job through the API, {todo - 2} copies of it inserted, 1 more through the API"
    probe = submit(client, {**WAITING_SPEC, "name": f"{name}-probe"})
    seeded = Seeded(probe, f"{done} in {time.monotonic() - t0:.1f} s")
    deadline = time.monotonic() + 90
    while (job := client.get(f"/v1/jobs/{probe}").json())["queue_position"] != total:
        if time.monotonic() > deadline:
            seeded.warnings.append(
                f"the newest of {total} waiting jobs shows queue_position {job['queue_position']} "
                f"({(job.get('waiting') or {}).get('reason')}), not {total}: copies the service does not "
                "see as waiting? (try --seed api)"
            )
            break
        time.sleep(0.5)
    return seeded


def client_team(client: httpx.Client) -> str:
    return str(client.get("/v1/me").json()["team"])


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "floor":
        serve_floor(int(sys.argv[2]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()

"""Submission throughput on the PostgreSQL + Redis deployment: jobs/s at 1, 10 and 50 concurrent
clients, with an empty queue and with 10,000 jobs waiting, whether every answered job is stored
once, and whether a team's queue limit holds exactly under 50 concurrent clients.

    .venv/bin/python bench/submit.py [--seconds 10] [--jobs 10000] [--seed clone|api] [--quota 100]
    .venv/bin/python bench/submit.py --quick      # a smoke run: 10 clients, 3 s, 1,000 waiting, quota 20

Each of the six cells (clients x queue) gets a deployment of its own, so that its queue is what
it says when the run starts: a fresh PostgreSQL database on the local server, Redis database 15
(emptied), and ``distill api`` with its default number of API processes (one per CPU, at most 4:
printed) and no worker host. The token's rate limit is lifted (``DISTILLERY_RATE_LIMIT``) and the
team's ``max_queued`` removed. Twenty submissions to another GPU-type queue, cancelled at once,
warm every process up. The 10,000 waiting jobs are the team's, in the queue the measured jobs join
(a GPU type no worker serves: nothing starts): with ``--seed clone`` (the default) one job
through the API, 9,998 copies of its row and events inserted in one transaction, the last one
through the API; the run waits until that one shows ``queue_position`` 10,000. ``--seed api``
submits them all through the API.

The load is ``wrk`` (Debian's package, 2 threads; 1 for one client): each connection is one
client sending ``POST /v1/jobs`` with a small JSON spec, one request after the other, for
``--seconds``. A Lua script gives every request a unique job name and counts the answers by
status. A load generator in Python (httpx, asyncio) would spend a good part of the 2 cores
itself; wrk spends little. jobs/s = 202 answers / duration. Afterwards the jobs stored under
those names are counted in the database: every 202 must be stored (stored >= 202s), no request
stored twice (distinct names = rows), and nothing else stored but the requests wrk left unanswered
when its time was up (stored <= 202s + unanswered: the server still handles those).

Quotas: a new team with ``max_queued`` = ``--quota`` (100), 50 clients submitting long enough
to fill it three times over at the rate just measured (3 to 60 s), with 10,000 other jobs
waiting: it must end with exactly that many jobs, all answered 202, the rest 409.

Target (issue 14): >= 200 jobs/s with 10 clients, with 0 and with 10,000 jobs waiting; printed
PASS or FAIL (the run exits 0 either way; non-zero only if a service could not start or wrk is
missing). Non-202 answers, socket errors, timeouts and tracebacks in the service's log are listed
as findings. A default run takes about 4 minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
from _api import (
    BENCH_RATE_LIMIT,
    WAITING_SPEC,
    ApiService,
    WrkResult,
    at_rest,
    code_env,
    count_rows,
    fill_queue,
    fresh_postgres,
    log_problems,
    need_wrk,
    open_team,
    redis_db,
    report,
    settle,
    verdict,
    wrk,
)
from _service import EmbeddedService

REDIS_DB = 15  # the test suite uses 0, 11, 12, 13; api_poll.py 14 and 10
CLIENTS = (1, 10, 50)
NAME = "__NAME__"
QUOTA: list[str] = []  # the quota check's verdict, printed with the targets


@dataclass
class Cell:
    clients: int
    waiting: int
    processes: str
    result: WrkResult
    stored: int
    distinct: int

    @property
    def accepted(self) -> int:
        return self.result.count(202)

    @property
    def jobs_per_s(self) -> float:
        return self.accepted / self.result.seconds

    @property
    def unanswered(self) -> int:
        # wrk calls request() once more than it sends, to check the script
        return max(0, self.result.issued - 1 - self.result.requests)

    @property
    def stored_once(self) -> bool:
        return (
            self.distinct == self.stored and self.accepted <= self.stored <= self.accepted + self.unanswered
        )


def body(prefix: str) -> str:
    return json.dumps({**WAITING_SPEC, "name": f"{prefix}-{NAME}"})


def post_jobs(service: EmbeddedService, token: str, clients: int, seconds: int, prefix: str) -> WrkResult:
    headers = {"Authorization": token, "Content-Type": "application/json"}
    return wrk(
        f"{service.url}/v1/jobs",
        connections=clients,
        seconds=seconds,
        headers=headers,
        method="POST",
        body=body(prefix),
        unique=NAME,
    )


def warm_up(client: httpx.Client) -> None:
    """Twenty jobs in a queue of their own, four connections at a time (every API process gets
    some), then cancelled: they end, and wait in no queue."""
    spec = {**WAITING_SPEC, "resources": {"gpu_type": "bench-warm-up"}}

    def one(i: int) -> None:
        r = client.post("/v1/jobs", json={**spec, "name": f"warm-up-{i}"})
        assert r.status_code == 202, r.text
        assert client.post(f"/v1/jobs/{r.json()['id']}/cancel").status_code == 202

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(20)))


def findings_of(service: EmbeddedService, where: str, result: WrkResult, expected: set[int]) -> list[str]:
    found = []
    bad = {s: n for s, n in sorted(result.statuses.items()) if s not in expected}
    if bad or any(result.socket_errors.values()):
        errors = {k: n for k, n in result.socket_errors.items() if n}
        found.append(f"{where}: statuses {bad or 'as expected'}, socket errors {errors or 'none'}")
    return found


def cell(clients: int, waiting: int, args: argparse.Namespace, findings: list[str], quota: bool) -> Cell:
    env = {"DISTILLERY_RATE_LIMIT": BENCH_RATE_LIMIT, **code_env()}
    where = f"{clients} clients, {waiting:,} waiting"
    with (
        fresh_postgres("distillery_bench_submit") as db,
        redis_db(REDIS_DB) as broker,
        ApiService(db, broker, workers=None, **env) as service,
    ):
        client = open_team(service, "submitters")
        token = str(client.headers["Authorization"])
        warm_up(client)
        if waiting:
            seeded = fill_queue(service, client, db, waiting, args.seed, name="seed")
            findings += [f"{where}: {w}" for w in seeded.warnings]
            print(f"  {waiting:,} waiting: {seeded.how}", flush=True)
        idle = at_rest(service)
        result = post_jobs(service, token, clients, args.seconds, prefix="sub")
        settle(service, idle, timeout=30)  # what wrk left unanswered is still stored
        stored, distinct = count_rows(
            db, "SELECT count(*), count(DISTINCT name) FROM jobs WHERE name LIKE 'sub-%'"
        )
        findings += findings_of(service, where, result, {202})
        problems, seen = log_problems(service, where)
        findings += problems
        done = Cell(clients, waiting, service.processes(), result, int(stored), int(distinct))
        if quota:
            check_quota(service, db, args.quota, idle, findings, done.jobs_per_s)
            findings += log_problems(service, "quota", since=seen)[0]
        return done


def check_quota(
    service: EmbeddedService, db: str, limit: int, idle: float, findings: list[str], rate: float
) -> None:
    """A team with max_queued ``limit``, 50 clients submitting long enough to fill it three times
    over at ``rate`` (the jobs/s measured just before)."""
    r = service.admin.post("/v1/teams", json={"name": "quota", "max_queued": limit})
    assert r.status_code == 201, r.text
    assert service.admin.post("/v1/users", json={"name": "quota-user", "team": "quota"}).status_code == 201
    token = "Bearer " + service.admin.post("/v1/tokens", json={"user": "quota-user"}).json()["token"]
    seconds = min(60, max(3, math.ceil(3 * limit / max(rate, 1))))
    result = post_jobs(service, token, 50, seconds, prefix="quota")
    settle(service, idle, timeout=30)
    (stored,) = count_rows(db, "SELECT count(*) FROM jobs WHERE team = 'quota'")
    queued = service.admin.get("/v1/teams/quota").json()["usage"]["queued"]
    ok = stored == limit and queued == limit and result.count(202) == limit
    answers = f"{result.count(202)} answered 202, {result.count(409)} answered 409"
    QUOTA.append(
        f"quota: max_queued {limit}, 50 clients for {seconds} s: {stored} jobs stored (the team's "
        f"usage says {queued}), {answers}: {verdict(ok)} (exactly {limit})"
    )
    findings += findings_of(service, "quota", result, {202, 409})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=10_000, help="the long queue")
    parser.add_argument("--seed", choices=("clone", "api"), default="clone")
    parser.add_argument("--quota", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="10 clients only, 3 s, 1,000 waiting, quota 20")
    args = parser.parse_args()
    clients: tuple[int, ...] = CLIENTS
    if args.quick:
        args.seconds, args.jobs, args.quota, clients = 3, min(args.jobs, 1000), min(args.quota, 20), (10,)
    need_wrk()
    started = time.monotonic()
    findings: list[str] = []
    cells = []
    for waiting in (0, args.jobs):
        for n in clients:
            print(f"{n} clients, {waiting:,} jobs waiting ...", flush=True)
            last = waiting == args.jobs and n == clients[-1]
            cells.append(cell(n, waiting, args, findings, quota=last))
    print(
        f"\nPOST /v1/jobs, distill api with its default {cells[0].processes} processes, {args.seconds} s each"
    )
    print(
        "| clients | waiting at start | jobs/s | p50 ms | p99 ms | 202 | stored | unanswered | stored once |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for c in cells:
        r = c.result
        print(
            f"| {c.clients} | {c.waiting:,} | {c.jobs_per_s:.1f} | {r.p50_ms:.0f} | {r.p99_ms:.0f} | "
            f"{c.accepted} | {c.stored} | {c.unanswered} | {'yes' if c.stored_once else 'NO'} |"
        )
    rates = [(c.waiting, c.jobs_per_s) for c in cells if c.clients == 10]
    lines = [
        f"10 clients, {n:,} waiting: {r:.1f} jobs/s (target >= 200): {verdict(r >= 200)}" for n, r in rates
    ]
    every = all(c.stored_once for c in cells)
    lines.append(f"every answered job stored once, nothing stored twice: {verdict(every)}")
    report(started, lines + QUOTA, findings)


if __name__ == "__main__":
    main()

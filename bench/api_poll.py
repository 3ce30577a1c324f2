"""Polling the API under load: what 50 concurrent pollers with one token get from a job, its
``304``, the jobs list and the list's ``304``, against a floor, with 10 and with 10,000 jobs waiting.

    .venv/bin/python bench/api_poll.py [--rounds 3] [--seconds 5] [--jobs 10000] [--seed clone|api]
    .venv/bin/python bench/api_poll.py --quick      # a one-minute smoke run (1 round, 1,000 jobs)

What runs, one after the other, in one run:
- the embedded deployment: ``distill serve`` (SQLite, the embedded broker, one API process and
  its CPU worker) in a temporary home;
- the PostgreSQL + Redis deployment: ``distill api --workers 1`` (a fresh database on the local
  server, Redis database 14), no worker host; then the same database served with the default
  number of API processes (``distill api`` without ``--workers``), 10,000 jobs waiting only;
- the floor, all along: a bare FastAPI app, one plain ``def`` endpoint returning a small dict,
  served by uvicorn in one process with the options ``distill api --workers 1`` passes it (read
  from ``cli.main`` at start-up, printed), its garbage collector settled as the project's API
  processes settle theirs (``api.heap``).

The load is ``wrk`` (Debian's package), 50 connections over 2 threads, one member token in the
``Authorization`` header; a Lua script counts every status and prints p50/p95/p99 from wrk's latency
histogram. The requests: ``GET /v1/jobs/{id}`` of the newest waiting job (the back of the queue),
the same with ``If-None-Match: <its ETag>`` (checked to answer 304 before each run), ``GET
/v1/jobs?limit=10`` (the first page: 10 jobs, as many at 10 waiting jobs as at 10,000) and the same
with the page's ETag. Then the service is started again keeping no full answer
(``DISTILLERY_ANSWER_CACHE_BYTES=0``) and the two full answers are measured once more, built on
every request (``, built``), beside a floor of their own; then it is started as before. Every run
is ``--seconds`` long; the first round starts with a one-second
warm-up of each. Each round measures the floor and the four requests back to back (the floor first
in even rounds, last in odd ones), over ``--rounds``: the ratios project/floor are per round, then
the median, so that a noisy neighbour on the two cores hits both sides. While the floor is measured
the project's processes are stopped (SIGSTOP, then SIGCONT): its background work (the dispatcher's
passes) loads only its own figures. Before each run the service is left to finish what the last one
left unanswered (wrk disconnects, the server still serves those) until its CPU use is back to its
rest (at most 15 s). A request so slow that a run gets fewer answers than connections is too slow to
measure: that run's figures are bounds, and the later rounds at that queue size are skipped (said
under findings).

The waiting jobs belong to the pollers' team and ask for a GPU type no worker serves
(``bench-unserved``), so they wait (reason ``no_worker``) on both deployments, and the embedded
worker trains nothing while the API is measured. The first 10 are submitted through the API. The
10,000 (``--jobs``): with ``--seed clone`` (the default) one more job through the API, 9,988 copies
of its row and events inserted in one transaction (every column copied from what the submission
stored, new ids and names), then the polled job through the API; the run waits until that job
shows ``queue_position`` 10,000 and says so if it does not. ``--seed api`` submits them all
through the API, eight at a time (minutes at today's 10–40 submissions/s).

Targets (issue 14), each printed PASS or FAIL (the run exits 0 either way; non-zero only if a
service could not start or wrk is missing):
- a full ``GET /v1/jobs/{id}`` at >= 0.5x the floor's requests/s, with a p99 at most 2x the floor's;
- a ``304`` >= 3x cheaper than the full answer (requests/s, the job's and the list's, each
  relative to its floor): than the answer built, what a ``304`` saves by deciding from versions
  without loading or serializing anything. Against the answer the API keeps by its ETag
  (``api.bodies``), which costs what a ``304`` costs, the ratio is printed without a target;
- the same figures at 10,000 waiting jobs as at 10, within 20% (each request's requests/s and p99
  relative to the floor measured beside it).
Non-2xx/3xx answers, statuses other than the one expected, socket errors, timeouts and tracebacks
in the service's log are listed at the end as findings.

The deployments run one at a time; the PostgreSQL database and the Redis database are dropped and
emptied afterwards. A default run takes about 13 minutes; 10 against the code before issue 14, whose
requests at 10,000 waiting jobs outlive a run.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import httpx
from _api import (
    BENCH_RATE_LIMIT,
    ApiService,
    Floor,
    WrkResult,
    at_rest,
    code_env,
    embedded_db_url,
    fill_queue,
    fresh_postgres,
    log_problems,
    median,
    need_wrk,
    open_team,
    redis_db,
    report,
    settle,
    verdict,
    wrk,
)
from _service import EmbeddedService

REDIS_DB = 14  # the test suite uses 0, 11, 12, 13; submit.py 15
FLOOR = "floor"
PAGE = "/v1/jobs?limit=10"  # a page as long at 10 waiting jobs as at 10,000: the same work
JOB, JOB_304, LIST, LIST_304 = "GET /v1/jobs/{id}", "  304 of the job", "GET /v1/jobs", "  304 of the list"
JOB_BUILT, LIST_BUILT = "GET /v1/jobs/{id}, built", "GET /v1/jobs, built"
NO_KEPT_ANSWERS = {"DISTILLERY_ANSWER_CACHE_BYTES": "0"}  # every full answer built again


@dataclass
class Settings:
    rounds: int
    seconds: int
    connections: int
    seed: str


Runs = dict[str, list[WrkResult]]


def requests_now(
    client: httpx.Client, probe: str, findings: list[str], where: str, built: bool = False
) -> list[tuple[str, str, dict[str, str], int]]:
    """The four requests with the ETags of now, each checked once: (label, path, headers, status);
    ``built``: the two full answers only, of a service that keeps none."""
    job = client.get(f"/v1/jobs/{probe}")
    page = client.get(PAGE)
    assert job.status_code == 200 and page.status_code == 200, (job.text, page.text)
    found = [
        (JOB, f"/v1/jobs/{probe}", {}, 200),
        (JOB_304, f"/v1/jobs/{probe}", {"If-None-Match": job.headers.get("ETag", "")}, 304),
        (LIST, PAGE, {}, 200),
        (LIST_304, PAGE, {"If-None-Match": page.headers.get("ETag", "")}, 304),
    ]
    if built:
        found = [(JOB_BUILT, f"/v1/jobs/{probe}", {}, 200), (LIST_BUILT, PAGE, {}, 200)]
    for label, path, headers, status in found:
        got = client.get(path, headers=headers).status_code
        if got != status:
            findings.append(f"{where}: {label.strip()} {path} answered {got} to one request, not {status}")
    return found


def measure(
    service: EmbeddedService,
    floor: Floor,
    client: httpx.Client,
    probe: str,
    s: Settings,
    findings: list[str],
    where: str,
    built: bool = False,
) -> Runs:
    token = {"Authorization": str(client.headers["Authorization"])}
    runs: Runs = defaultdict(list)
    idle = at_rest(service)
    print(f"  the service at rest: {idle:.2f} CPU (its dispatcher's passes)", flush=True)

    def run_floor(seconds: int) -> WrkResult:
        service.pause()
        try:
            return wrk(floor.url + floor.path, connections=s.connections, seconds=seconds, headers=token)
        finally:
            service.resume()

    def run(path: str, headers: dict[str, str]) -> WrkResult:
        settle(service, idle, timeout=15)
        return wrk(service.url + path, connections=s.connections, seconds=s.seconds, headers=headers)

    for r in range(s.rounds):
        if r == 0:  # warm-up, discarded
            run_floor(1)
            for _, path, headers, _ in requests_now(client, probe, findings, where, built):
                settle(service, idle, timeout=15)
                wrk(service.url + path, connections=s.connections, seconds=1, headers={**token, **headers})
        if r % 2 == 0:
            runs[FLOOR].append(run_floor(s.seconds))
        for label, path, headers, status in requests_now(client, probe, findings, where, built):
            result = run(path, {**token, **headers})
            runs[label].append(result)
            if problem := result.unexpected(status):
                findings.append(f"{where}, round {r + 1}: {label.strip()} ({status} expected): {problem}")
        if r % 2 == 1:
            runs[FLOOR].append(run_floor(s.seconds))
        slow = [label for label in runs if label != FLOOR and runs[label][-1].requests < s.connections]
        if slow and r + 1 < s.rounds:
            # most requests outlive a run: its figures are lower bounds, and what it leaves
            # unanswered (still served after wrk disconnects) would weigh on the next rounds
            findings.append(
                f"{where}: {', '.join(x.strip() for x in slow)}: fewer answers than connections in "
                f"{s.seconds} s (figures are bounds: too slow to measure); rounds after the first skipped"
            )
            break
    settle(service, idle, timeout=15)
    bad_floor = [p for result in runs[FLOOR] if (p := result.unexpected(200))]
    findings += [f"{where}: the floor: {p}" for p in bad_floor]
    return runs


BUILT_FLOOR = "  floor beside the built answers"


def join(runs: Runs, built: Runs) -> Runs:
    """``runs`` and the built answers' runs; each built label's ratios are over its own floor."""
    return {**runs, BUILT_FLOOR: built[FLOOR], **{label: built[label] for label in (JOB_BUILT, LIST_BUILT)}}


def ratio(runs: Runs, label: str, attr: str, over: str = FLOOR) -> float:
    """Median over rounds of label's ``attr`` / over's ``attr`` measured in the same round (a
    built answer's floor: the one measured beside it)."""
    if over == FLOOR and label in (JOB_BUILT, LIST_BUILT):
        over = BUILT_FLOOR
    pairs = zip(runs[label], runs[over], strict=True)
    return median([getattr(a, attr) / getattr(b, attr) if getattr(b, attr) else math.nan for a, b in pairs])


def show(title: str, runs: Runs) -> None:
    print(f"\n{title}", flush=True)
    print("| request | req/s | p50 ms | p95 ms | p99 ms | req/s vs floor | p99 vs floor |")
    print("|---|---|---|---|---|---|---|")
    for label, results in runs.items():
        rps, p50 = median([r.rps for r in results]), median([r.p50_ms for r in results])
        p95, p99 = median([r.p95_ms for r in results]), median([r.p99_ms for r in results])
        vs = (
            f"{ratio(runs, label, 'rps'):.2f}x | {ratio(runs, label, 'p99_ms'):.2f}x"
            if label not in (FLOOR, BUILT_FLOOR)
            else "1 | 1"
        )
        print(f"| {label} | {rps:,.0f} | {p50:.1f} | {p95:.1f} | {p99:.1f} | {vs} |", flush=True)


def checks(name: str, by_size: dict[int, Runs]) -> list[str]:
    lines = []
    for size, runs in by_size.items():
        at = f"{name}, {size:,} waiting"
        rps, p99 = ratio(runs, JOB, "rps"), ratio(runs, JOB, "p99_ms")
        lines.append(f"{at}: full GET {rps:.2f}x the floor's req/s (target >= 0.5): {verdict(rps >= 0.5)}")
        lines.append(f"{at}: full GET p99 {p99:.2f}x the floor's (target <= 2): {verdict(p99 <= 2)}")
        for cheap, full, built, what in (
            (JOB_304, JOB, JOB_BUILT, "the job's"),
            (LIST_304, LIST, LIST_BUILT, "the list's"),
        ):
            # each relative to the floor measured beside it: the built answers ran in other rounds
            x = ratio(runs, cheap, "rps") / ratio(runs, built, "rps")
            lines.append(
                f"{at}: {what} 304 {x:.2f}x the req/s of its full answer built (target >= 3): "
                f"{verdict(x >= 3)}"
            )
            kept = ratio(runs, cheap, "rps", over=full)
            lines.append(f"{at}: {what} 304 {kept:.2f}x the req/s of its full answer kept (no target)")
    sizes = sorted(by_size)
    if len(sizes) == 2:
        small, big = (by_size[n] for n in sizes)
        for label in (JOB, JOB_304, LIST, LIST_304):
            what = label.strip()
            rps = ratio(big, label, "rps") / ratio(small, label, "rps")
            p99 = ratio(big, label, "p99_ms") / ratio(small, label, "p99_ms")
            ok = rps >= 0.8 and p99 <= 1.2
            lines.append(
                f"{name}: {what} at {sizes[1]:,} vs {sizes[0]:,} waiting (each vs its floor): req/s "
                f"{rps:.2f}x, p99 {p99:.2f}x (target: within 20%): {verdict(ok)}"
            )
    return lines


def deployment(
    name: str,
    service: EmbeddedService,
    db_url: str,
    floor: Floor,
    sizes: list[int],
    s: Settings,
    findings: list[str],
) -> tuple[dict[int, Runs], httpx.Client, str]:
    client = open_team(service, "pollers")
    by_size, probe = {}, ""
    for size in sizes:
        seeded = fill_queue(service, client, db_url, size, s.seed, name=f"poll-{size}")
        probe = seeded.probe
        findings += [f"{name}: {w}" for w in seeded.warnings]
        print(f"\n{name}: {size:,} jobs waiting ({seeded.how})", flush=True)
        where = f"{name}, {size:,} waiting"
        runs = measure(service, floor, client, probe, s, findings, where)
        # the full answers once more, built every time: the same service started keeping none
        service.stop()
        service.env.update(NO_KEPT_ANSWERS)
        service.start()
        built = measure(service, floor, client, probe, s, findings, f"{where}, no answers kept", built=True)
        service.stop()
        for key in NO_KEPT_ANSWERS:
            service.env.pop(key)
        service.start()
        by_size[size] = join(runs, built)
        show(
            f"{name}, {size:,} jobs waiting, {len(runs[FLOOR])} rounds x {s.seconds} s, "
            f"{s.connections} connections (built: the service started again keeping no answer, "
            "beside a floor of its own)",
            by_size[size],
        )
    return by_size, client, probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=10_000, help="the long queue (the short one is 10)")
    parser.add_argument("--seed", choices=("clone", "api"), default="clone")
    parser.add_argument(
        "--no-default-workers", action="store_true", help="skip distill api's default processes"
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 round of 3 s, 1,000 jobs, no default processes"
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.jobs, args.no_default_workers = 1, 3, min(args.jobs, 1000), True
    s = Settings(args.rounds, args.seconds, args.connections, args.seed)
    sizes = [10, args.jobs]
    version = subprocess.run([need_wrk(), "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    env: dict[str, Any] = {"DISTILLERY_RATE_LIMIT": BENCH_RATE_LIMIT, **code_env()}
    findings: list[str] = []
    lines: list[str] = []
    started = time.monotonic()
    with Floor() as floor:
        print(
            f"{os.cpu_count()} CPUs; {version.split(' Copyright')[0]}; floor: {floor.options()}", flush=True
        )
        name = "embedded"
        with EmbeddedService(**env) as service:
            by_size, _, _ = deployment(name, service, embedded_db_url(service), floor, sizes, s, findings)
            findings += log_problems(service, name)[0]
        lines += checks(name, by_size)
        with fresh_postgres("distillery_bench_poll") as db, redis_db(REDIS_DB) as broker:
            name = "postgres+redis, 1 API process"
            with ApiService(db, broker, workers=1, **env) as service:
                by_size, client, probe = deployment(name, service, db, floor, sizes, s, findings)
                found, seen = log_problems(service, name)
                findings += found
                lines += checks(name, by_size)
                if not args.no_default_workers:
                    service.stop()
                    service.workers = None  # distill api's default
                    service.start()
                    name = f"postgres+redis, default {service.processes()} API processes"
                    where = f"{name}, {args.jobs:,} waiting"
                    runs = measure(service, floor, client, probe, s, findings, where)
                    rounds = len(runs[FLOOR])
                    show(f"{where} (the floor: one process), {rounds} rounds x {s.seconds} s", runs)
                    findings += log_problems(service, name, since=seen)[0]
    report(started, lines, findings)


if __name__ == "__main__":
    main()

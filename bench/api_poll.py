"""Polling the API under load: what 50 concurrent pollers with one token get from a job, its
``304``, the jobs list and the list's ``304``, against a floor, with 10 and with 10,000 jobs waiting.

    .venv/bin/python bench/api_poll.py [--rounds 5] [--seconds 5] [--jobs 10000] [--seed clone|api]
    .venv/bin/python bench/api_poll.py --quick      # a smoke run (1 round of 3 s, 1,000 jobs)

What runs, one deployment after the other, in one run:
- the embedded deployment: two ``distill serve`` services (SQLite, the embedded broker, one API
  process and its CPU worker), each in a temporary home of its own: one with 10 jobs waiting,
  one with 10,000;
- the PostgreSQL + Redis deployment: two ``distill api --workers 1`` services, each with a fresh
  database on the local server and a Redis database of its own (14 and 10), no worker host; then
  the 10,000-job one served with the default number of API processes (``distill api`` without
  ``--workers``);
- the floor, all along: a bare FastAPI app, one plain ``def`` endpoint returning a small dict,
  served by uvicorn in one process with the options ``distill api --workers 1`` passes it (read
  from ``cli.main`` at start-up, printed), its garbage collector settled as the project's API
  processes settle theirs (``api.heap``).

The load is ``wrk`` (Debian's package), 50 connections over 2 threads, one member token in the
``Authorization`` header; a Lua script counts every status and prints p50/p95/p99 from wrk's latency
histogram. The requests: ``GET /v1/jobs/{id}`` of the newest waiting job (the back of the queue),
the same with ``If-None-Match: <its ETag>`` (checked to answer 304 before each round), ``GET
/v1/jobs?limit=10`` (the first page: 10 jobs, as many at 10 waiting jobs as at 10,000) and the same
with the page's ETag. Every run is ``--seconds`` long; the first round starts with a one-second
warm-up of each. Each round measures the floor and each request at both queue sizes, one size
right after the other (which goes first swaps every round; the floor goes first in even rounds,
last in odd ones), over ``--rounds``: the ratios are per round, then the median, so
that a noisy neighbour on the two cores hits both sides. The two sizes are thus compared in the
same rounds, against the same floor: what drifts between the phases of a run (this machine's
load, the floor's own figures) cannot make them differ. What remains is each run's own
noise: on this machine a 5-second run's p99 moves by 10-30% from one round to the next whatever
is served, so the default is 5 rounds (with 3, one noisy round could decide a median), and each
size's p99 ratio is printed round by round. Whatever is not being measured is stopped (SIGSTOP,
then SIGCONT): the other service while one is, both while the floor is; a service's background
work (its dispatcher's passes) loads only its own figures. Before each run the service is left
to finish what the last one left unanswered (wrk disconnects, the server still serves those)
until its CPU use is back to its rest (at most 15 s). A request so slow that a run gets fewer
answers than connections is too slow to measure: that run's figures are bounds, and the later
rounds are skipped (said under findings).

Then both services are started again keeping no full answer (``DISTILLERY_ANSWER_CACHE_BYTES=0``)
and the two full answers are measured once more in the same way, built on every request
(``, built``), beside a floor of their own.

The waiting jobs belong to the pollers' team and ask for a GPU type no worker serves
(``bench-unserved``), so they wait (reason ``no_worker``) on both deployments, and the embedded
worker trains nothing while the API is measured. The 10 are submitted through the API. The
10,000 (``--jobs``): with ``--seed clone`` (the default) one job through the API, 9,998 copies
of its row and events inserted in one transaction (every column copied from what the submission
stored, new ids and names), then the polled job through the API; the run waits until that job
shows ``queue_position`` 10,000 and says so if it does not. ``--seed api`` submits them all
through the API, eight at a time.

Targets (issue 14), each printed PASS or FAIL (the run exits 0 either way; non-zero only if a
service could not start or wrk is missing):
- a full ``GET /v1/jobs/{id}`` at >= 0.5x the floor's requests/s, with a p99 at most 2x the floor's;
- a ``304`` >= 3x cheaper than the full answer (requests/s, the job's and the list's, each
  relative to its floor): than the answer built, what a ``304`` saves by deciding from versions
  without loading or serializing anything. Against the answer the API keeps by its ETag
  (``api.bodies``), which costs what a ``304`` costs, the ratio is printed without a target;
- the same figures at 10,000 waiting jobs as at 10, within 20%: each request's requests/s and p99
  at 10,000 over those at 10 measured in the same round (the same as their ratios to that
  round's floor, divided), the median over rounds.
Non-2xx/3xx answers, statuses other than the one expected, socket errors, timeouts and tracebacks
in the services' logs are listed at the end as findings.

The PostgreSQL databases and the Redis databases are dropped and emptied afterwards. A default
run takes about 18 minutes.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
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

# the two queue sizes' brokers; the test suite uses 0, 11, 12, 13 (and any free one); submit.py 15
REDIS_DBS = (14, 10)
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


@dataclass
class Side:
    """One queue size of a comparison: its own service (database, broker), the API as the
    pollers' member, and the job polled."""

    size: int
    service: EmbeddedService
    client: httpx.Client
    probe: str
    idle: float = 0.0  # its CPU use at rest (its dispatcher's passes)

    def where(self, name: str) -> str:
        return f"{name}, {self.size:,} waiting"


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
    sides: list[Side], floor: Floor, s: Settings, findings: list[str], name: str, built: bool = False
) -> dict[int, Runs]:
    """Rounds of the floor and each request on every side, the sides one after the other request
    by request (their order swapped every round), every other service paused meanwhile: per side,
    its runs and the floor's (the same runs for every side)."""
    runs: dict[int, Runs] = {side.size: defaultdict(list) for side in sides}
    floor_runs: list[WrkResult] = []
    for side in sides:
        runs[side.size][FLOOR] = floor_runs

    @contextmanager
    def alone(active: Side | None) -> Iterator[None]:
        """Every service but ``active``'s paused (SIGSTOP), so that its background work loads only
        its own figures."""
        others = [side.service for side in sides if side is not active]
        for service in others:
            service.pause()
        try:
            yield
        finally:
            for service in others:
                service.resume()

    def run_floor(seconds: int) -> WrkResult:
        with alone(None):
            return wrk(floor.url + floor.path, connections=s.connections, seconds=seconds, headers=token)

    def run(side: Side, path: str, headers: dict[str, str], seconds: int) -> WrkResult:
        with alone(side):
            settle(side.service, side.idle, timeout=15)
            auth = {"Authorization": str(side.client.headers["Authorization"])}
            url = side.service.url + path
            return wrk(url, connections=s.connections, seconds=seconds, headers={**auth, **headers})

    token = {"Authorization": str(sides[0].client.headers["Authorization"])}
    for side in sides:
        with alone(side):
            side.idle = at_rest(side.service)
        print(f"  {side.where(name)}: the service at rest: {side.idle:.2f} CPU", flush=True)
    for r in range(s.rounds):
        order = sides if r % 2 == 0 else sides[::-1]
        now = {
            side.size: requests_now(side.client, side.probe, findings, side.where(name), built)
            for side in sides
        }
        if r == 0:  # warm-up, discarded
            run_floor(1)
            for side in sides:
                for _, path, headers, _ in now[side.size]:
                    run(side, path, headers, 1)
        if r % 2 == 0:
            floor_runs.append(run_floor(s.seconds))
        for i in range(len(now[sides[0].size])):
            for side in order:
                label, path, headers, status = now[side.size][i]
                result = run(side, path, headers, s.seconds)
                runs[side.size][label].append(result)
                if problem := result.unexpected(status):
                    findings.append(
                        f"{side.where(name)}, round {r + 1}: {label.strip()} ({status} expected): {problem}"
                    )
        if r % 2 == 1:
            floor_runs.append(run_floor(s.seconds))
        slow = [
            f"{label.strip()} at {size:,} waiting"
            for size, by_label in runs.items()
            for label in by_label
            if label != FLOOR and by_label[label][-1].requests < s.connections
        ]
        if slow and r + 1 < s.rounds:
            # most requests outlive a run: its figures are lower bounds, and what it leaves
            # unanswered (still served after wrk disconnects) would weigh on the next rounds
            findings.append(
                f"{name}: {', '.join(slow)}: fewer answers than connections in {s.seconds} s (figures "
                "are bounds: too slow to measure); rounds after the first skipped"
            )
            break
    for side in sides:
        with alone(side):
            settle(side.service, side.idle, timeout=15)
    findings += [f"{name}: the floor: {p}" for result in floor_runs if (p := result.unexpected(200))]
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
    return beside(runs[label], runs[over], attr)


def beside(these: list[WrkResult], those: list[WrkResult], attr: str) -> float:
    """Median over rounds of ``these``' ``attr`` / ``those``' measured in the same round."""
    return median(per_round(these, those, attr))


def per_round(these: list[WrkResult], those: list[WrkResult], attr: str) -> list[float]:
    """``these``' ``attr`` / ``those``' measured in the same round, round by round."""
    pairs = zip(these, those, strict=True)
    return [getattr(a, attr) / getattr(b, attr) if getattr(b, attr) else math.nan for a, b in pairs]


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
            # measured in the same rounds against one floor: each size's ratio to that floor,
            # divided, is the ratio of the two sizes' own figures, round by round
            p99_rounds = per_round(big[label], small[label], "p99_ms")
            rps, p99 = beside(big[label], small[label], "rps"), median(p99_rounds)
            ok = rps >= 0.8 and p99 <= 1.2
            rounds = ", ".join(f"{x:.2f}" for x in p99_rounds)
            lines.append(
                f"{name}: {label.strip()} at {sizes[1]:,} vs {sizes[0]:,} waiting (measured side by "
                f"side, one floor): req/s {rps:.2f}x, p99 {p99:.2f}x (per round: {rounds}) (target: "
                f"within 20%): {verdict(ok)}"
            )
    return lines


def restart(services: list[EmbeddedService], keep_answers: bool) -> None:
    """The services stopped, then started again keeping full answers by their ETags (the
    default) or keeping none (``NO_KEPT_ANSWERS``)."""
    for service in services:
        service.stop()
        for key in NO_KEPT_ANSWERS:
            service.env.pop(key, None)
        if not keep_answers:
            service.env.update(NO_KEPT_ANSWERS)
        service.start()


def deployment(
    name: str,
    services: list[EmbeddedService],
    db_urls: list[str],
    floor: Floor,
    sizes: list[int],
    s: Settings,
    findings: list[str],
) -> tuple[dict[int, Runs], list[Side]]:
    """One deployment's two services, their queues filled to ``sizes``, measured side by side;
    then the full answers built, every service started again keeping none. Prints each size's
    table; the services are left stopped."""
    sides = []
    for service, db_url, size in zip(services, db_urls, sizes, strict=True):
        client = open_team(service, "pollers")
        seeded = fill_queue(service, client, db_url, size, s.seed, name=f"poll-{size}")
        findings += [f"{name}: {w}" for w in seeded.warnings]
        print(f"\n{name}: {size:,} jobs waiting ({seeded.how})", flush=True)
        sides.append(Side(size, service, client, seeded.probe))
    runs = measure(sides, floor, s, findings, name)
    restart(services, keep_answers=False)  # the full answers once more, built every time
    built = measure(sides, floor, s, findings, f"{name}, no answers kept", built=True)
    for service in services:
        service.stop()
    by_size = {size: join(runs[size], built[size]) for size in sizes}
    for size in sizes:
        show(
            f"{name}, {size:,} jobs waiting, {len(runs[size][FLOOR])} rounds x {s.seconds} s, "
            f"{s.connections} connections (built: the services started again keeping no answer, "
            "beside a floor of their own)",
            by_size[size],
        )
    return by_size, sides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
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
    if args.jobs <= 10:
        parser.error("--jobs: the long queue must hold more than the short one's 10 jobs")
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
        with EmbeddedService(**env) as small, EmbeddedService(**env) as big:
            services = [small, big]
            by_size, sides = deployment(
                name, services, [embedded_db_url(x) for x in services], floor, sizes, s, findings
            )
            for side in sides:
                findings += log_problems(side.service, side.where(name))[0]
        lines += checks(name, by_size)
        with (
            fresh_postgres("distillery_bench_poll") as db_small,
            fresh_postgres("distillery_bench_poll") as db_big,
            redis_db(REDIS_DBS[0]) as broker_small,
            redis_db(REDIS_DBS[1]) as broker_big,
        ):
            name = "postgres+redis, 1 API process"
            with (
                ApiService(db_small, broker_small, workers=1, **env) as small,
                ApiService(db_big, broker_big, workers=1, **env) as big,
            ):
                services = [small, big]
                by_size, sides = deployment(name, services, [db_small, db_big], floor, sizes, s, findings)
                seen = {}
                for side in sides:
                    found, seen[side.size] = log_problems(side.service, side.where(name))
                    findings += found
                lines += checks(name, by_size)
                if not args.no_default_workers:
                    big.workers = None  # distill api's default
                    restart([big], keep_answers=True)
                    name = f"postgres+redis, default {big.processes()} API processes"
                    runs = measure([sides[-1]], floor, s, findings, name)[args.jobs]
                    rounds = len(runs[FLOOR])
                    where = sides[-1].where(name)
                    show(f"{where} (the floor: one process), {rounds} rounds x {s.seconds} s", runs)
                    findings += log_problems(big, name, since=seen[args.jobs])[0]
    report(started, lines, findings)


if __name__ == "__main__":
    main()

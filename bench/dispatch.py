"""Dispatched → running: how long a small job waits between the dispatcher handing it to a host
and its training starting, with the engine server (``worker.engine_server``: the engine imported
once per worker host, each job's process forked from it) and without it (a fresh interpreter per
job, which imports torch and torchvision first), side by side in one run.

    .venv/bin/python bench/dispatch.py [--jobs 10] [--rounds 2]

Each side is an embedded service (``distill serve``: API, dispatcher, one worker); the jobs are
submitted one at a time, each once the previous has ended, so none waits for a slot. For each job
the time from its ``dispatched`` event to its ``running`` transition (the engine's first progress,
after its data is loaded) comes from the job's own events. The sides alternate over ``--rounds``,
so that a noisy neighbour hits both. Prints the median and the spread of each side and their
ratio; the target is a median under 1.5 s with the server.

Where the time went, without the server (py-spy of the engine process, and ``python -X
importtime -c "import core.runner"``): importing the engine is 4–5 s of the 5–10 s (torch ~2.4 s,
torchvision's models ~1.3 s, which pull in ``torch._dynamo``); the rest is the interpreter, the
spec, the data (MNIST-1D generated and cached) and the Celery child's claim.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime
from typing import Any

import httpx
from _service import EmbeddedService, submit, wait

SMALL_JOB: dict[str, Any] = {
    "name": "dispatch-small",
    "data": {"kind": "mnist1d", "train_limit": 400},
    "teacher": {"model": {"kind": "cnn1d", "channels": 16}, "train": {"epochs": 1, "batch_size": 100}},
    "student": {"model": {"kind": "mlp", "hidden": [32]}},
    "distill": {"epochs": 1, "batch_size": 100, "transfer": {"choose": "always"}},
    "baseline": False,
    "export": ["safetensors"],
    "runtime": {"measure_speed": False},
}


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def start_delay(client: httpx.Client, job_id: str) -> float:
    """Seconds from the job's ``dispatched`` event to its ``running`` transition."""
    items = client.get(f"/v1/jobs/{job_id}/events", params={"format": "json"}).json()["items"]
    dispatched = next(_at(e["at"]) for e in items if e["kind"] == "dispatched")
    running = next(_at(e["at"]) for e in items if e.get("to_status") == "running")
    return (running - dispatched).total_seconds()


def side(server: bool, jobs: int) -> list[float]:
    with EmbeddedService(DISTILLERY_ENGINE_SERVER=str(server).lower()) as service:
        client = service.member("starters")
        time.sleep(8)  # the engine server's imports, outside what is measured
        delays = []
        for i in range(jobs + 1):
            job_id = submit(client, {**SMALL_JOB, "name": f"dispatch-{i}"})
            job = wait(client, job_id)
            assert job["status"] == "succeeded", job.get("error")
            if i:  # the first job warms the data cache for both sides alike
                delays.append(start_delay(client, job_id))
        return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    per_round = max(1, args.jobs // args.rounds)
    found: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.rounds):
        for server in (True, False):
            found[server] += side(server, per_round)
    print(f"dispatched → running, {len(found[True])} small jobs a side ({args.rounds} alternating rounds)")
    print("| engine process | median s | min s | max s |")
    print("|---|---|---|---|")
    for server, name in ((True, "forked from the engine server"), (False, "a fresh interpreter")):
        d = found[server]
        print(f"| {name} | {statistics.median(d):.2f} | {min(d):.2f} | {max(d):.2f} |")
    with_server, without = statistics.median(found[True]), statistics.median(found[False])
    print(f"median with the server {with_server:.2f} s (target < 1.5 s), {without / with_server:.1f}x faster")


if __name__ == "__main__":
    main()

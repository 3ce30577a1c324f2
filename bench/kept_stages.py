"""What a kept teacher saves: the same job twice in one team, and once in another team.

    .venv/bin/python bench/kept_stages.py [--spec examples/mnist1d.yaml]

Starts the embedded service (``distill serve``) in a temporary home, makes two teams, and runs
the spec as team A (it trains its teacher and baseline and keeps them), the same spec again as
team A (it reuses both: only the students train), and as team B (it must train everything again:
a team never sees another's stages). Prints, per job, the wall time
from submission to its end, the report's stage times, and which stages its events say were
reused; then the time the second job saved against the first.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import httpx
from _service import EmbeddedService, bench_spec, events, submit, wait


def _run(client: httpx.Client, spec: dict[str, Any]) -> dict[str, Any]:
    t0 = time.monotonic()
    job = wait(client, submit(client, spec))
    assert job["status"] == "succeeded", job["error"]
    job["_wall_s"] = time.monotonic() - t0
    said = events(client, job["id"])
    job["_reused"] = sorted(m.split(":")[0].removeprefix("stage ") for m in said if "reused from job" in m)
    return job


def _row(label: str, job: dict[str, Any]) -> str:
    t = job["report"]["timing"]
    reused = ", ".join(job["_reused"]) or "nothing"
    return (
        f"| {label} | {job['_wall_s']:.1f} | {t.get('teacher_s', 0):.1f} | {t.get('baseline_s', 0):.1f} | "
        f"{t.get('distill_s', 0):.1f} | {reused} | {job['report']['teacher']['test_top1']:.3f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default="examples/mnist1d.yaml")
    parser.add_argument("--epochs-scale", type=float, default=1.0, help="every stage's epochs times this")
    args = parser.parse_args()
    spec = bench_spec(args.spec, args.epochs_scale)
    with EmbeddedService() as service:
        team_a, team_b = service.member("bench-a"), service.member("bench-b")
        first, second, third = _run(team_a, spec), _run(team_a, spec), _run(team_b, spec)
    print(f"{args.spec}, epochs ×{args.epochs_scale}, through the embedded service (one worker); seconds")
    print("| job | wall | teacher | baseline | student | stages reused | teacher test top-1 |")
    print("|---|---|---|---|---|---|---|")
    print(_row("team A, first", first))
    print(_row("team A, the same spec again", second))
    print(_row("team B, same spec as A's first", third))
    saved = first["_wall_s"] - second["_wall_s"]
    print(
        f"team A's second job saved {saved:.1f} s of {first['_wall_s']:.1f} s "
        f"({second['_wall_s'] / first['_wall_s']:.2f}x the first's wall time); team B reused "
        f"{', '.join(third['_reused']) or 'nothing'}"
    )


if __name__ == "__main__":
    main()

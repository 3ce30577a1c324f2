"""A sweep against the same trials run as independent jobs: CPU time, early stops, teachers trained.

    .venv/bin/python bench/sweep.py [--spec examples/mnist1d.yaml] [--epochs-scale 1.0]

The issue's MNIST-1D grid: KD ``temperature`` {1, 2, 4, 8} × KD ``weight`` {0.5, 1.0}, 8 trials,
ASHA early stopping. Both sides run through the embedded service (``distill serve``, one worker)
on the same base spec (exports reduced to safetensors, no compression, for both):

- **independent**: the 8 specs submitted as 8 jobs, each by a team of its own, so that none
  reuses another's teacher or baseline (a team never sees another's kept stages): what running
  the trials by hand costs;
- **sweep**: one ``POST /v1/sweeps`` (grid, ``asha``, ``max_concurrent`` 2) in a fresh service.

Prints the CPU seconds of each side (the service's processes: API, worker and every job's
engine process), the ratio sweep/independent, how many trials ASHA stopped, how many jobs
trained a teacher, and the best trial's validation top-1 against the default recipe's
(temperature 2, weight 1.0: the independent job of that grid point). ``--epochs-scale`` shrinks
every stage's epochs for a quicker look.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import time
from typing import Any

import httpx
from _service import EmbeddedService, bench_spec, events, submit, wait

TEMPERATURES = (1.0, 2.0, 4.0, 8.0)
WEIGHTS = (0.5, 1.0)
DEFAULT = (2.0, 1.0)  # the default recipe: KD temperature 2, weight 1


def _val_top1(client: httpx.Client, job: dict[str, Any]) -> float | None:
    """The student's val/top1 at its best epoch, from the stage the engine kept (the transfer set
    or the plain inputs): what a sweep's objective is."""
    stage = ((job.get("report") or {}).get("transfer") or {}).get("stage") or "student"
    values, cursor = {}, None
    while True:
        params = {"stage": stage, "limit": 500, **({"after": cursor} if cursor else {})}
        page = client.get(f"/v1/jobs/{job['id']}/metrics", params=params).json()
        values |= {
            m["epoch"]: m["value"] for m in page["items"] if m["stage"] == stage and m["name"] == "val/top1"
        }
        if not page["items"] or not (cursor := page.get("next_cursor")):
            break
    best = ((job.get("report") or {}).get("student") or {}).get("best_epoch")
    return values.get(best, max(values.values(), default=None))


def independent(base: dict[str, Any]) -> tuple[float, float, float | None]:
    with EmbeddedService() as service:
        t0 = time.monotonic()
        jobs = {}
        for i, (t, w) in enumerate(itertools.product(TEMPERATURES, WEIGHTS)):
            spec = copy.deepcopy(base)
            spec["distill"]["losses"] = [{"kind": "kd", "temperature": t, "weight": w}]
            client = service.member(f"solo-{i}")
            jobs[(t, w)] = (client, submit(client, spec))
        done = {key: wait(client, job_id) for key, (client, job_id) in jobs.items()}
        wall = time.monotonic() - t0
        assert all(job["status"] == "succeeded" for job in done.values()), [j["error"] for j in done.values()]
        default_val = _val_top1(jobs[DEFAULT][0], done[DEFAULT])
        time.sleep(3)  # the last pool child is reaped
        return service.cpu_used(), wall, default_val


def sweep(base: dict[str, Any]) -> tuple[float, float, dict[str, Any], list[list[str]]]:
    request = {
        "name": "t-and-weight",
        "base": base,
        "params": {
            "distill.losses.0.temperature": list(TEMPERATURES),
            "distill.losses.0.weight": list(WEIGHTS),
        },
        "method": "grid",
        "max_concurrent": 2,
        "early_stopping": "asha",
    }
    with EmbeddedService() as service:
        client = service.member("sweepers")
        t0 = time.monotonic()
        r = client.post("/v1/sweeps", json=request)
        assert r.status_code == 202, r.text
        sweep_id = r.json()["id"]
        while (view := client.get(f"/v1/sweeps/{sweep_id}").json())["status"] == "running":
            time.sleep(1)
        wall = time.monotonic() - t0
        said = [events(client, trial["job_id"]) for trial in view["trials"] if trial.get("job_id")]
        for trial in view["trials"]:
            if trial.get("job_id"):
                wait(client, trial["job_id"])
        time.sleep(3)
        return service.cpu_used(), wall, view, said


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default="examples/mnist1d.yaml")
    parser.add_argument("--epochs-scale", type=float, default=1.0)
    args = parser.parse_args()
    base = bench_spec(args.spec, args.epochs_scale)

    cpu_solo, wall_solo, default_val = independent(base)
    cpu_sweep, wall_sweep, view, said = sweep(base)

    trials = view["trials"]
    pruned = sum(t["status"] == "pruned" for t in trials)
    trained_teacher = sum(any(m.startswith("stage teacher: kept") for m in lines) for lines in said)
    reused_teacher = sum(any(m.startswith("stage teacher: reused") for m in lines) for lines in said)
    best = max((t["objective"] for t in trials if t["objective"] is not None), default=None)

    print(f"{args.spec}, epochs ×{args.epochs_scale}: temperature {TEMPERATURES} × weight {WEIGHTS}, ASHA")
    print("| | CPU s | wall s | trials | stopped early | jobs that trained a teacher |")
    print("|---|---|---|---|---|---|")
    print(f"| 8 independent jobs | {cpu_solo:.0f} | {wall_solo:.0f} | 8 | 0 | 8 |")
    print(
        f"| one sweep | {cpu_sweep:.0f} | {wall_sweep:.0f} | {len(trials)} | {pruned} | {trained_teacher} |"
    )
    print(
        f"sweep/independent CPU time: {cpu_sweep / cpu_solo:.2f} (target ≤ 0.60); stopped early: "
        f"{pruned}/{len(trials)} (target ≥ 1/3); teacher trained by {trained_teacher} trial(s), reused by "
        f"{reused_teacher}"
    )
    print(f"best trial val top-1 {best} vs the default recipe's (T=2, weight 1.0) {default_val}")
    for trial in sorted(trials, key=lambda t: t["number"]):
        print(
            f"  trial {trial['number']}: {trial['params']} {trial['status']} objective {trial['objective']}"
        )


if __name__ == "__main__":
    main()

"""Fair scheduling: jobs wait in the database and go to the pool slot by slot, team by team.

Each test gets a fresh database (SQLite, and PostgreSQL where it runs). Jobs are named, and
their creation times are set a second apart, so every expected order is computed by hand.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from domain.lifecycle import claim, mark_published
from store.db import session_scope
from store.jobs import transition
from store.locks import DISPATCH, hold
from store.models import HELD, Job, JobStatus, Team, Worker
from store.pool import heartbeat
from store.scheduler import Wait, plan, waits
from worker.dispatcher import dispatch_once

T0 = datetime(2026, 1, 1, tzinfo=UTC)


# ---------------------------------------------------------------- helpers


def add_jobs(db_url: str, *jobs: tuple[str, str | None, int], **values: Any) -> None:
    """(name, team, created second) rows, queued and never dispatched unless ``values`` say otherwise."""
    with session_scope(db_url) as session:
        for name, team, second in jobs:
            session.add(
                Job(name=name, spec={}, team=team, created_at=T0 + timedelta(seconds=second), **values)
            )


def add_workers(db_url: str, *workers: tuple[str, str]) -> None:
    """(worker id, GPU type), registered the way a worker's heartbeat does it."""
    with session_scope(db_url) as session:
        for worker_id, gpu_type in workers:
            heartbeat(session, worker_id, host="h", gpu_type=gpu_type, devices=[])


def add_team(db_url: str, name: str, max_running: int | None) -> None:
    with session_scope(db_url) as session:
        session.add(Team(name=name, max_running=max_running))


def job_id(db_url: str, name: str) -> str:
    with session_scope(db_url) as session:
        found = session.scalar(select(Job.id).where(Job.name == name))
        assert found is not None, name
        return found


def hand_over(db_url: str) -> list[str]:
    """One dispatcher pass without a broker: the lock, the plan, the marks; the names handed over."""
    with session_scope(db_url) as session:
        hold(session, DISPATCH)
        jobs = plan(session)
        for job in jobs:
            mark_published(session, job.id)
        return [job.name for job in jobs]


def start(db_url: str, name: str, worker: str) -> None:
    """A worker claims a dispatched job (its lease names the worker, as ``worker.tasks`` does)."""
    with session_scope(db_url) as session:
        assert claim(session, job_id(db_url, name), f"{worker}:4242", lease_s=600) is not None


def finish(db_url: str, name: str) -> None:
    with session_scope(db_url) as session:
        assert transition(session, job_id(db_url, name), HELD, JobStatus.SUCCEEDED)


def wait_of(db_url: str) -> dict[str, Wait]:
    """``waits`` for every job of the database, by name."""
    with session_scope(db_url) as session:
        jobs = session.scalars(select(Job)).all()
        found = waits(session, jobs)
        return {job.name: found[job.id] for job in jobs if job.id in found}


# ---------------------------------------------------------------- tests


def test_nothing_is_dispatched_without_an_online_worker(db_url: str) -> None:
    add_jobs(db_url, ("j", "a", 0))
    add_jobs(db_url, ("big", "a", 1), queue="a100")
    add_workers(db_url, ("gone@h", "any"))
    with session_scope(db_url) as session:
        session.get(Worker, "gone@h").status = "lost"  # type: ignore[union-attr]
    assert hand_over(db_url) == []
    found = wait_of(db_url)
    assert found["j"] == Wait(1, "no_worker", "no worker is online")
    assert found["big"].reason == "no_worker" and "'a100'" in found["big"].message

    add_workers(db_url, ("t4@h", "t4"))  # serves gpu.t4 and gpu.any: not gpu.a100
    found = wait_of(db_url)
    assert (found["j"].position, found["j"].reason) == (1, "dispatching")
    assert found["big"] == Wait(1, "no_worker", "no online worker serves GPU type 'a100'")


def test_capacity_counts_started_and_dispatched_jobs(db_url: str) -> None:
    add_workers(db_url, ("w1@h", "any"), ("w2@h", "any"), ("w3@h", "any"))
    add_jobs(db_url, *[(f"j{i}", "a", i) for i in range(6)])
    assert hand_over(db_url) == ["j0", "j1", "j2"]
    assert hand_over(db_url) == []  # nothing given twice, nothing beyond three slots
    start(db_url, "j0", "w1@h")
    finish(db_url, "j0")
    start(db_url, "j1", "w2@h")
    assert hand_over(db_url) == ["j3"]  # one slot freed: one job
    found = wait_of(db_url)
    # j2 and j3 dispatched (in that order), then the waiting ones
    assert found["j2"] == Wait(1, "dispatched", "handed to the pool: it starts when a worker takes it")
    assert found["j3"].position == 2 and found["j3"].reason == "dispatched"
    assert (found["j4"].position, found["j4"].reason) == (3, "pool_busy")
    assert (
        found["j4"].message
        == "all 3 worker(s) that serve 'any' are busy or promised to jobs ahead; 2 job(s) ahead in this queue"
    )
    assert (found["j5"].position, found["j5"].reason) == (4, "pool_busy")
    assert "j0" not in found and "j1" not in found  # over, and started: no wait


def test_a_team_with_a_long_queue_does_not_hold_the_pool(db_url: str) -> None:
    add_workers(db_url, ("w1@h", "any"), ("w2@h", "any"))
    add_jobs(db_url, *[(f"A{i}", "a", i) for i in range(20)])
    assert hand_over(db_url) == ["A0", "A1"]  # nobody else waits: both slots go to A
    start(db_url, "A0", "w1@h")
    start(db_url, "A1", "w2@h")
    add_jobs(db_url, ("B0", "b", 100), ("B1", "b", 101))
    assert hand_over(db_url) == []

    found = wait_of(db_url)
    # B has no slot, A has two: B0, then B1 (B 1 < A 2), then A's queue in order
    expected = {"B0": 1, "B1": 2, **{f"A{i}": i + 1 for i in range(2, 20)}}
    assert {name: w.position for name, w in found.items()} == expected
    assert {w.reason for w in found.values()} == {"pool_busy"}

    finish(db_url, "A0")
    assert hand_over(db_url) == ["B0"]  # not A2, although A2 is older
    start(db_url, "B0", "w1@h")
    finish(db_url, "A1")
    assert hand_over(db_url) == ["A2"]  # A 0 running, B 1: A's turn


def test_max_running_caps_a_team(db_url: str) -> None:
    add_team(db_url, "a", max_running=1)
    add_team(db_url, "b", max_running=None)
    add_workers(db_url, *[(f"w{i}@h", "any") for i in range(5)])
    add_jobs(db_url, ("A0", "a", 0), ("A1", "a", 1), ("A2", "a", 2), ("B0", "b", 3), ("N0", None, 4))
    # A0 (oldest of the tie at 0), then B0 and N0 (0 each, older first); A is at its limit
    assert hand_over(db_url) == ["A0", "B0", "N0"]
    found = wait_of(db_url)
    message = (
        "team 'a' has 1 job(s) in the pool, its limit (max_running=1); this one starts after one of them ends"
    )
    assert found["A1"] == Wait(4, "team_limit", message)
    assert found["A2"] == Wait(5, "team_limit", message)

    start(db_url, "A0", "w0@h")
    finish(db_url, "A0")
    assert hand_over(db_url) == ["A1"]
    assert hand_over(db_url) == []  # two slots free, but A is at its limit again


def test_positions_put_a_team_that_reaches_its_limit_behind_the_others(db_url: str) -> None:
    add_team(db_url, "a", max_running=1)
    add_workers(db_url, ("w1@h", "any"), ("w2@h", "any"))
    add_jobs(db_url, ("B0", "b", 0), ("B1", "b", 1))
    assert hand_over(db_url) == ["B0", "B1"]
    add_jobs(db_url, ("A0", "a", 2), ("A1", "a", 3), ("B2", "b", 4))
    # A0 (a 0 < b 2); a is then at its limit, so B2 comes before A1 although a 1 < b 2
    found = wait_of(db_url)
    assert {n: w.position for n, w in found.items()} == {"B0": 1, "B1": 2, "A0": 3, "B2": 4, "A1": 5}
    # a has no job in the pool yet: A1 waits for a worker, not for a's limit
    assert {found[n].reason for n in ("A0", "A1", "B2")} == {"pool_busy"}


def test_within_a_team_higher_priority_first_then_older(db_url: str) -> None:
    add_workers(db_url, ("w@h", "any"))
    add_jobs(db_url, ("low", "a", 0), priority=-1)
    add_jobs(db_url, ("normal", "a", 1), ("normal2", "a", 3), priority=0)
    add_jobs(db_url, ("high", "a", 2), priority=1)
    add_jobs(db_url, ("other", "b", 4), priority=1)
    found = wait_of(db_url)
    # high, then b's job (fewest slots: b 0 vs a 1), then a's by priority then age
    assert {n: w.position for n, w in found.items()} == {
        "high": 1,
        "other": 2,
        "normal": 3,
        "normal2": 4,
        "low": 5,
    }
    assert found["high"].reason == "dispatching" and found["other"].reason == "pool_busy"
    assert hand_over(db_url) == ["high"]


def test_gpu_types_route_jobs(db_url: str) -> None:
    add_workers(db_url, ("t4a@h", "t4"), ("t4b@h", "t4"))
    add_jobs(db_url, ("big", "a", 0), queue="a100")
    add_jobs(db_url, ("small", "a", 1), queue="any")
    add_jobs(db_url, ("fast", "a", 2), ("fast2", "a", 3), queue="t4")
    # the a100 job does not hold back the team's jobs that fit the pool
    assert hand_over(db_url) == ["small", "fast"]
    found = wait_of(db_url)
    assert found["big"] == Wait(1, "no_worker", "no online worker serves GPU type 'a100'")
    assert found["small"].position == 1 and found["fast"].position == 1  # a place per queue
    assert (found["fast2"].position, found["fast2"].reason) == (2, "pool_busy")
    add_workers(db_url, ("a100@h", "a100"))
    assert hand_over(db_url) == ["big"]


def test_a_started_job_holds_the_worker_its_lease_names(db_url: str) -> None:
    add_workers(db_url, ("gpu@h", "a100"), ("cpu@h", "any"))
    add_jobs(db_url, ("anything", "a", 0), published_at=T0)
    start(db_url, "anything", "gpu@h")  # the broker gave the "any" job to the a100 worker
    add_jobs(db_url, ("big", "b", 1), queue="a100")
    add_jobs(db_url, ("small", "c", 2))
    found = wait_of(db_url)
    assert (found["big"].reason, found["small"].reason) == ("pool_busy", "dispatching")
    assert hand_over(db_url) == ["small"]  # to the idle "any" worker; the a100 one is busy


def test_a_dispatched_any_job_is_counted_on_an_any_worker_first(db_url: str) -> None:
    add_workers(db_url, ("gpu@h", "a100"), ("cpu@h", "any"))
    add_jobs(db_url, ("sent", "a", 0), published_at=T0)  # dispatched, not yet claimed
    add_jobs(db_url, ("big", "a", 1), queue="a100")
    add_jobs(db_url, ("small", "a", 2))
    # "sent" holds the "any" worker's slot, so the a100 one is free for "big" (counted on the
    # a100 worker, "sent" would have left the "any" worker to "small")
    assert hand_over(db_url) == ["big"]
    assert hand_over(db_url) == []
    assert wait_of(db_url)["small"] == Wait(
        2,
        "pool_busy",
        "all 2 worker(s) that serve 'any' are busy or promised to jobs ahead; 1 job(s) ahead in this queue",
    )


def test_a_retrying_job_waits_and_keeps_its_age(db_url: str) -> None:
    add_workers(db_url, ("w@h", "any"))
    add_jobs(db_url, ("new", "a", 10))
    add_jobs(db_url, ("again", "a", 0), status="retrying", attempt=1)
    assert {n: (w.position, w.reason) for n, w in wait_of(db_url).items()} == {
        "again": (1, "dispatching"),
        "new": (2, "pool_busy"),
    }
    assert hand_over(db_url) == ["again"]
    with session_scope(db_url) as session:
        job = session.get(Job, job_id(db_url, "again"))
        assert job is not None and job.status == "queued" and job.published_at is not None


def test_waits_costs_nothing_for_a_page_without_waiting_jobs(db_url: str) -> None:
    add_workers(db_url, ("w@h", "any"))
    add_jobs(db_url, ("done", "a", 0), status="succeeded")
    with session_scope(db_url) as session:
        assert waits(session, session.scalars(select(Job)).all()) == {}


def test_racing_passes_never_give_a_slot_twice(db_url: str) -> None:
    add_workers(db_url, *[(f"w{i}@h", "any") for i in range(5)])
    add_jobs(db_url, *[(f"j{i}", "abc"[i % 3], i) for i in range(30)])
    passes = 8
    sent: list[str] = []
    guard = threading.Lock()
    barrier = threading.Barrier(passes)

    def publish(job_id: str, queue: str) -> None:
        with guard:
            sent.append(job_id)
        time.sleep(0.02)  # a slow broker: widens the window in which two passes could overlap

    def one_pass(_: int) -> int:
        barrier.wait()
        return dispatch_once(db_url, publish)

    with ThreadPoolExecutor(passes) as pool:
        counts = list(pool.map(one_pass, range(passes)))
    assert sum(counts) == 5 and len(sent) == 5 and len(set(sent)) == 5
    with session_scope(db_url) as session:
        dispatched = session.scalar(
            select(func.count()).select_from(Job).where(Job.published_at.is_not(None))
        )
    assert dispatched == 5

"""Fair scheduling: jobs wait in the database and go to the pool host by host, team by team.

Each test gets a fresh database (SQLite, and PostgreSQL where it runs). Jobs are named, and
their creation times are set a second apart, so every expected order is computed by hand.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, func, select, update

from domain.lifecycle import claim, mark_published
from store import scheduler
from store.db import session_scope
from store.jobs import transition
from store.locks import DISPATCH, hold
from store.models import HELD, Job, JobStatus, Team, Worker, utcnow
from store.pool import heartbeat, mark_lost, release_dispatched, sign_off
from store.scheduler import Placement, Wait, plan, snapshot, waits
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


def add_workers(db_url: str, *workers: tuple[str, str], slots: int = 1) -> None:
    """(worker id, GPU type) hosts of ``slots`` slots each, registered as a heartbeat does it."""
    with session_scope(db_url) as session:
        for worker_id, gpu_type in workers:
            devices = [{"index": i, "name": "cpu"} for i in range(slots)]
            heartbeat(session, worker_id, host="h", gpu_type=gpu_type, devices=devices, slots=slots)


def add_team(db_url: str, name: str, max_running: int | None) -> None:
    with session_scope(db_url) as session:
        session.add(Team(name=name, max_running=max_running))


def job_id(db_url: str, name: str) -> str:
    with session_scope(db_url) as session:
        found = session.scalar(select(Job.id).where(Job.name == name))
        assert found is not None, name
        return found


def placed(db_url: str) -> dict[str, Placement]:
    """One dispatcher pass without a broker: the lock, the plan, the marks; where each job went."""
    with session_scope(db_url) as session:
        hold(session, DISPATCH)
        jobs = plan(session)
        for job, placement in jobs:
            mark_published(session, job.id, placement)
        return {job.name: placement for job, placement in jobs}


def hand_over(db_url: str) -> list[str]:
    """One dispatcher pass: the names handed over, in order."""
    return list(placed(db_url))


def start(db_url: str, name: str) -> None:
    """The host a job was handed to claims it (its lease names the host, as ``worker.tasks`` does)."""
    with session_scope(db_url) as session:
        job = session.get(Job, job_id(db_url, name))
        assert job is not None and job.placed_on is not None, f"{name} was not handed over"
        assert claim(session, job.id, f"{job.placed_on}:4242", lease_s=600) is not None


def finish(db_url: str, name: str) -> None:
    with session_scope(db_url) as session:
        assert transition(session, job_id(db_url, name), HELD, JobStatus.SUCCEEDED)


def run(db_url: str, *names: str) -> None:
    """Hand the pool's room over, then start the named jobs (all handed over in that pass)."""
    handed = hand_over(db_url)
    assert set(names) <= set(handed), (names, handed)
    for name in names:
        start(db_url, name)


def wait_of(db_url: str) -> dict[str, Wait]:
    """``waits`` for every job of the database, by name."""
    with session_scope(db_url) as session:
        jobs = session.scalars(select(Job)).all()
        found = waits(session, jobs)
        return {job.name: found[job.id] for job in jobs if job.id in found}


# ---------------------------------------------------------------- tests


def test_a_snapshot_loads_the_waiting_jobs_again_only_when_they_changed(db_url: str) -> None:
    add_jobs(db_url, ("a", "t", 0), ("b", "t", 1))

    def waiting() -> tuple[Any, dict[str, Any]]:
        with session_scope(db_url) as session:
            snap = snapshot(session)
        names = {j.id: j for j in snap.waiting}
        with session_scope(db_url) as session:
            rows = session.execute(select(Job.id, Job.name).where(Job.id.in_(names))).all()
        return snap.waiting_key, {name: names[i] for i, name in rows}

    key, jobs = waiting()
    again_key, again = waiting()
    assert again_key == key and all(again[n] is jobs[n] for n in jobs)  # kept: not loaded again

    # one job leaves and another arrives, both at version 1: same count, same versions, new key
    with session_scope(db_url) as session:
        mark_published(session, job_id(db_url, "a"), Placement("w1", (0,)))
    add_jobs(db_url, ("c", "t", 2))
    key, jobs = waiting()
    assert key != again_key and set(jobs) == {"b", "c"}
    assert jobs["b"] is again["b"]  # unchanged: kept, only the new one read

    # a change to a waiting job bumps its version: seen, though the set of ids is the same
    with session_scope(db_url) as session:
        session.execute(update(Job).where(Job.name == "b").values(queue="a100", version=Job.version + 1))
    changed_key, changed = waiting()
    assert changed_key != key and changed["b"].queue == "a100" and changed["c"] is jobs["c"]

    with session_scope(db_url) as session:  # one stops waiting: gone
        transition(session, job_id(db_url, "c"), [JobStatus.QUEUED], JobStatus.CANCELLED)
    assert set(waiting()[1]) == {"b"}


def test_many_new_waiting_jobs_are_read_in_one_statement_and_match_the_database(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_jobs(db_url, ("a", "t", 0))
    with session_scope(db_url) as session:
        first = {j.id: j for j in snapshot(session).waiting}
    monkeypatch.setattr(scheduler, "RELOAD_ALL_AFTER", 1)
    add_jobs(db_url, ("b", "t", 1), ("c", "t", 2))  # two new: more than RELOAD_ALL_AFTER
    with session_scope(db_url) as session:
        snap = snapshot(session)
        in_db = set(session.scalars(select(Job.id).where(Job.status == JobStatus.QUEUED)))
    loaded = {j.id: j for j in snap.waiting}
    assert set(loaded) == in_db and len(snap.waiting) == 3
    assert all(loaded[i] is not first[i] for i in first)  # all read again, none kept


def test_a_pass_at_rest_does_not_go_through_the_waiting_jobs_again(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_jobs(db_url, ("a", "t", 0))
    looked: list[int] = []
    real_select = scheduler._select
    monkeypatch.setattr(scheduler, "_select", lambda *a: looked.append(1) or real_select(*a))

    def one_pass() -> list[str]:
        with session_scope(db_url) as session:
            hold(session, DISPATCH)
            return [job.id for job, _placement in plan(session, 100)]

    assert one_pass() == [] and one_pass() == [] and len(looked) == 1  # no host: the same again
    add_workers(db_url, ("w1", "any"))  # something a pass reads changed: it looks again
    assert one_pass() == [job_id(db_url, "a")] and len(looked) == 2
    add_jobs(db_url, ("b", "t", 1))
    assert one_pass() == [job_id(db_url, "a")] and len(looked) == 3  # not marked: still first


def test_a_queue_that_did_not_change_is_not_listed_again(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass first asks for two numbers (PostgreSQL: the waiting jobs' count and hash sum;
    SQLite: the writes to ``jobs``, counted by triggers): while they are what they were, every
    job's ``id.version`` is not sent again. Any change (a new job, a job changed in place, one
    that left) is seen at the next pass."""
    add_jobs(db_url, ("a", "t", 0), ("b", "t", 1))
    listed: list[int] = []
    real_parts = scheduler.waiting_parts
    monkeypatch.setattr(scheduler, "waiting_parts", lambda session: listed.append(1) or real_parts(session))

    def waiting() -> dict[str, int]:
        with session_scope(db_url) as session:
            return {j.id: j.priority for j in snapshot(session).waiting}

    assert set(waiting()) == {job_id(db_url, "a"), job_id(db_url, "b")} and len(listed) == 1
    waiting()
    unchanged = 1
    assert len(listed) == unchanged
    with session_scope(db_url) as session:  # changed in place: same count, another version
        session.execute(update(Job).where(Job.name == "a").values(priority=7, version=Job.version + 1))
    assert waiting()[job_id(db_url, "a")] == 7 and len(listed) == unchanged + 1
    add_jobs(db_url, ("c", "t", 2))
    assert job_id(db_url, "c") in waiting()
    with session_scope(db_url) as session:
        transition(session, job_id(db_url, "b"), [JobStatus.QUEUED], JobStatus.CANCELLED)
    assert set(waiting()) == {job_id(db_url, "a"), job_id(db_url, "c")}
    with session_scope(db_url) as session:
        summed = scheduler.waiting_sum(session)
        assert summed is not None and summed == scheduler.waiting_parts(session)[2]
        assert summed[0] == (2 if db_url.startswith("postgresql") else -1)


def test_on_sqlite_every_row_written_to_jobs_moves_the_number_a_pass_compares(db_url: str) -> None:
    """The triggers of migration 0009: an insert, an update and a delete each count, in the
    writer's transaction; a job's rollback takes its count back with it. (PostgreSQL has none.)"""
    if not db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL compares a hash sum of the waiting jobs instead")

    def writes() -> int:
        with session_scope(db_url) as session:
            summed = scheduler.waiting_sum(session)
        assert summed is not None and summed[0] == -1
        return summed[1]

    before = writes()
    add_jobs(db_url, ("a", "t", 0), ("b", "t", 1))
    assert writes() == before + 2
    with session_scope(db_url) as session:
        session.execute(update(Job).where(Job.name == "a").values(priority=3))
        session.rollback()
    assert writes() == before + 2
    with session_scope(db_url) as session:
        session.execute(update(Job).values(priority=5))  # both rows
        session.commit()
    assert writes() == before + 4
    with session_scope(db_url) as session:
        session.execute(delete(Job).where(Job.name == "b"))
        session.commit()
    assert writes() == before + 5


def test_a_job_that_arrives_while_the_waiting_jobs_load_and_leaves_again_is_not_kept(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_jobs(db_url, ("a", "t", 0))
    real_parts = scheduler.waiting_parts

    def then_one_arrives(session: Any) -> Any:  # between the key and the rows
        parts = real_parts(session)
        add_jobs(db_url, ("late", "t", 1))
        return parts

    monkeypatch.setattr(scheduler, "waiting_parts", then_one_arrives)
    with session_scope(db_url) as session:
        loaded = {j.id for j in snapshot(session).waiting}
    assert job_id(db_url, "late") in loaded  # it was there when the rows were read
    monkeypatch.setattr(scheduler, "waiting_parts", real_parts)
    with session_scope(db_url) as session:  # and leaves before the next pass: as it was at the key
        transition(session, job_id(db_url, "late"), [JobStatus.QUEUED], JobStatus.CANCELLED)
    with session_scope(db_url) as session:
        assert [j.id for j in snapshot(session).waiting] == [job_id(db_url, "a")]


def test_a_job_cancelled_after_the_passs_snapshot_is_not_handed_over(db_url: str) -> None:
    """A cancel does not take the dispatch lock: it may commit between the pass's snapshot and its
    marks. The pass must neither mark nor publish that job. (On SQLite the pass holds the one
    write lock from its start, so no cancel commits in between.)"""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite's single writer: a cancel waits for the pass")
    add_workers(db_url, ("w1", "any"), slots=2)
    add_jobs(db_url, ("gone", "t", 0), ("stays", "t", 1))
    sent: list[str] = []
    real_snapshot = scheduler.snapshot

    def then_cancelled(session: Any) -> Any:
        snap = real_snapshot(session)
        if not sent:  # the pass's first snapshot only
            sent.append("snapshot")
            with session_scope(db_url) as other:
                transition(other, job_id(db_url, "gone"), [JobStatus.QUEUED], JobStatus.CANCELLED)
        return snap

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("worker.dispatcher.snapshot", then_cancelled)
        published = dispatch_once(db_url, lambda job, worker: sent.append(job))
    assert sent[1:] == [job_id(db_url, "stays")] and published == 1
    with session_scope(db_url) as session:
        gone = session.get(Job, job_id(db_url, "gone"))
        assert gone is not None and gone.status == JobStatus.CANCELLED and gone.published_at is None


def test_a_mark_writes_nothing_for_a_job_that_no_longer_waits(db_url: str) -> None:
    """Cancelled since the pass read it, or taken by a worker since a lost message's republish was
    decided: no placement is written over it and no message is to go."""
    add_jobs(db_url, ("gone", "t", 0), ("taken", "t", 1))
    with session_scope(db_url) as session:
        transition(session, job_id(db_url, "gone"), [JobStatus.QUEUED], JobStatus.CANCELLED)
        assert mark_published(session, job_id(db_url, "taken"), Placement("h1", (0,)))
    with session_scope(db_url) as session:
        assert claim(session, job_id(db_url, "taken"), "h1:7", lease_s=60) is not None
    with session_scope(db_url) as session:
        assert mark_published(session, job_id(db_url, "gone"), Placement("w1", (0,))) is False
        assert mark_published(session, job_id(db_url, "taken"), Placement("h2", (1,))) is False
    with session_scope(db_url) as session:
        gone, taken = (session.get(Job, job_id(db_url, name)) for name in ("gone", "taken"))
        assert gone is not None and (gone.placed_on, gone.published_at) == (None, None)
        assert taken is not None and (taken.placed_on, taken.devices) == ("h1", [0])


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
    start(db_url, "j0")
    finish(db_url, "j0")
    start(db_url, "j1")
    assert hand_over(db_url) == ["j3"]  # one slot freed: one job
    found = wait_of(db_url)
    # j2 and j3 dispatched (in that order), then the waiting ones
    assert found["j2"] == Wait(1, "dispatched", "handed to w3@h: it starts when that host's worker takes it")
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
    start(db_url, "A0")
    start(db_url, "A1")
    add_jobs(db_url, ("B0", "b", 100), ("B1", "b", 101))
    assert hand_over(db_url) == []

    found = wait_of(db_url)
    # B has no slot, A has two: B0, then B1 (B 1 < A 2), then A's queue in order
    expected = {"B0": 1, "B1": 2, **{f"A{i}": i + 1 for i in range(2, 20)}}
    assert {name: w.position for name, w in found.items()} == expected
    assert {w.reason for w in found.values()} == {"pool_busy"}

    finish(db_url, "A0")
    assert hand_over(db_url) == ["B0"]  # not A2, although A2 is older
    start(db_url, "B0")
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
        "team 'a' holds 1 GPU slot(s), its limit (max_running=1); this job needs 1: it starts when "
        "enough of them end"
    )
    assert found["A1"] == Wait(4, "team_limit", message)
    assert found["A2"] == Wait(5, "team_limit", message)

    start(db_url, "A0")
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


def test_a_job_started_before_placements_holds_a_slot_of_its_lease_s_host(db_url: str) -> None:
    add_workers(db_url, ("gpu@h", "a100"), ("cpu@h", "any"))
    # claimed by the a100 host before placements were recorded: only its lease says where it runs
    add_jobs(db_url, ("anything", "a", 0), status="running", lease_owner="gpu@h:7", started_at=T0)
    add_jobs(db_url, ("big", "b", 1), queue="a100")
    add_jobs(db_url, ("small", "c", 2))
    found = wait_of(db_url)
    assert (found["big"].reason, found["small"].reason) == ("pool_busy", "dispatching")
    assert placed(db_url) == {"small": Placement("cpu@h", (0,))}  # the a100 host is busy


def test_an_any_job_goes_to_an_any_host_first(db_url: str) -> None:
    add_workers(db_url, ("gpu@h", "a100"), ("cpu@h", "any"))
    add_jobs(db_url, ("sent", "a", 0))
    add_jobs(db_url, ("big", "a", 1), queue="a100")
    add_jobs(db_url, ("small", "a", 2))
    # "sent" takes the "any" host, which keeps the a100 one for "big"
    assert placed(db_url) == {"sent": Placement("cpu@h", (0,)), "big": Placement("gpu@h", (0,))}
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


# ---------------------------------------------------------------- hosts with several slots


def test_a_job_gets_all_its_slots_on_one_host_or_none(db_url: str) -> None:
    add_workers(db_url, ("h1@h", "any"), ("h2@h", "any"), slots=2)
    add_jobs(db_url, ("s0", "a", 0), ("s1", "a", 1), ("s2", "a", 2))
    run(db_url, "s0", "s1", "s2")  # s0 and s1 on h1, s2 on h2
    finish(db_url, "s0")
    add_jobs(db_url, ("big", "b", 3), gpus=2)
    # two slots are free, one on each host: never split
    assert hand_over(db_url) == []
    assert wait_of(db_url)["big"].reason == "pool_busy"
    finish(db_url, "s1")
    assert placed(db_url) == {"big": Placement("h1@h", (0, 1))}


def test_small_jobs_pack_hosts_so_a_big_one_finds_a_whole_host(db_url: str) -> None:
    add_workers(db_url, ("h1@h", "any"), ("h2@h", "any"), slots=2)
    add_jobs(db_url, ("s0", "a", 0), ("s1", "a", 1))
    # the tightest fit: the second job goes beside the first, not to the empty host
    assert placed(db_url) == {"s0": Placement("h1@h", (0,)), "s1": Placement("h1@h", (1,))}
    add_jobs(db_url, ("big", "b", 2), gpus=2)
    assert placed(db_url) == {"big": Placement("h2@h", (0, 1))}


def test_a_held_host_keeps_a_stream_of_small_jobs_from_starving_a_big_one(db_url: str) -> None:
    add_workers(db_url, ("h1@h", "any"), ("h2@h", "any"), slots=2)
    add_jobs(db_url, *[(f"s{i}", "a", i) for i in range(4)])
    run(db_url, "s0", "s1", "s2", "s3")  # s0, s1 on h1; s2, s3 on h2
    add_jobs(db_url, ("big", "a", 10), gpus=2)
    add_jobs(db_url, *[(f"late{i}", "a", 20 + i) for i in range(4)])

    finish(db_url, "s0")  # one slot of h1 frees: not enough for big, and held for it
    assert hand_over(db_url) == []
    found = wait_of(db_url)
    assert found["big"] == Wait(
        1,
        "pool_busy",
        "no host has 2 free slots; host h1@h is held for it: it starts there once 2 of its slots are "
        "free, and no later job takes them",
    )
    assert (found["late0"].position, found["late0"].reason) == (2, "pool_busy")

    finish(db_url, "s2")  # h2 frees one too: h1 stays held (1 free each, ties by id), h2 is fair game
    assert placed(db_url) == {"late0": Placement("h2@h", (0,))}
    finish(db_url, "s1")  # h1 is whole again: big goes there, before the later jobs
    assert placed(db_url) == {"big": Placement("h1@h", (0, 1))}


def test_without_a_host_for_it_a_big_job_holds_nothing_back(db_url: str) -> None:
    add_workers(db_url, ("h1@h", "any"), slots=2)
    add_jobs(db_url, ("huge", "a", 0), gpus=4)
    add_jobs(db_url, ("cpu", "a", 1), gpus=0)  # a CPU is enough: it still takes a slot
    assert placed(db_url) == {"cpu": Placement("h1@h", (0,))}
    found = wait_of(db_url)
    assert found["huge"] == Wait(2, "no_worker", "asks for 4 GPUs on one host; the largest online host has 2")
    add_jobs(db_url, ("typed", "a", 2), gpus=2, queue="a100")
    assert wait_of(db_url)["typed"].reason == "no_worker"
    add_workers(db_url, ("small-a100@h", "a100"), slots=1)
    assert wait_of(db_url)["typed"] == Wait(
        1, "no_worker", "asks for 2 GPUs on one host; the largest online host of GPU type 'a100' has 1"
    )


def test_fair_share_counts_an_n_gpu_job_as_n_slots(db_url: str) -> None:
    add_workers(db_url, ("h1@h", "any"), ("h2@h", "any"), slots=2)
    add_jobs(db_url, ("A-big", "a", 0), gpus=2)
    add_jobs(db_url, ("B0", "b", 1))
    run(db_url, "A-big", "B0")  # a holds 2 slots, b holds 1
    add_jobs(db_url, ("A1", "a", 2), ("B1", "b", 3))
    # one slot is free: b's job, although a's is older (counted in jobs, a 1 = b 1 would tie)
    assert hand_over(db_url) == ["B1"]
    assert wait_of(db_url)["A1"].position == 2  # behind B1, handed over


def test_max_running_counts_slots(db_url: str) -> None:
    add_team(db_url, "a", max_running=3)
    add_workers(db_url, ("h1@h", "any"), slots=4)
    add_workers(db_url, ("h2@h", "any"), slots=2)
    add_jobs(db_url, ("A-big", "a", 0), gpus=2)
    add_jobs(db_url, ("A-big2", "a", 1), gpus=2)
    add_jobs(db_url, ("A-small", "a", 2))
    add_jobs(db_url, ("A-huge", "a", 3), gpus=4)
    add_jobs(db_url, ("B", "b", 4))
    # a holds 2 after A-big; A-big2 needs 2 more than its limit of 3 leaves: it waits, and holds
    # its team's small job back; A-huge could never start under that limit and holds nothing back
    assert hand_over(db_url) == ["A-big", "B"]
    found = wait_of(db_url)
    assert found["A-big2"] == Wait(
        3,  # behind the two handed over
        "team_limit",
        "team 'a' holds 2 GPU slot(s), its limit (max_running=3); this job needs 2: it starts when "
        "enough of them end",
    )
    assert found["A-small"].reason == "team_limit"
    assert found["A-huge"] == Wait(
        5,  # last: after those that can start
        "team_limit",
        "asks for 4 GPUs, more than team 'a' may hold at once (max_running=3 GPU slots): it starts "
        "only if that limit is raised",
    )
    start(db_url, "A-big")
    finish(db_url, "A-big")
    assert hand_over(db_url) == ["A-big2", "A-small"]  # 3 slots: the limit, exactly


def test_a_host_that_goes_away_gives_back_the_jobs_it_had_not_taken(db_url: str) -> None:
    add_workers(db_url, ("h1@h", "any"), ("h2@h", "any"), slots=2)
    add_jobs(db_url, ("taken", "a", 0), ("sent", "a", 1))
    add_jobs(db_url, ("big", "b", 2), gpus=2)
    assert placed(db_url) == {
        "taken": Placement("h1@h", (0,)),
        "big": Placement("h2@h", (0, 1)),
        "sent": Placement("h1@h", (1,)),
    }
    start(db_url, "taken")
    later = utcnow() + timedelta(seconds=60)
    with session_scope(db_url) as session:
        session.get(Worker, "h1@h").last_heartbeat_at = later  # type: ignore[union-attr]
    with session_scope(db_url) as session:
        assert mark_lost(session, timeout_s=30, now=later) == ["h2@h"]
        assert release_dispatched(session) == [job_id(db_url, "big")]
    with session_scope(db_url) as session:
        big = session.get(Job, job_id(db_url, "big"))
        assert big is not None and (big.status, big.published_at, big.placed_on, big.devices) == (
            "queued",
            None,
            None,
            None,
        )
        # its message may still come, if h2 comes back: a claim there finds nothing to take
        assert claim(session, big.id, "h2@h:1", lease_s=60) is None
    assert wait_of(db_url)["big"].reason == "pool_busy"  # h1 is big enough, but busy
    add_workers(db_url, ("h3@h", "any"), slots=2)
    assert placed(db_url) == {"big": Placement("h3@h", (0, 1))}

    with session_scope(db_url) as session:
        sign_off(session, "h1@h")  # stopped cleanly: "sent" was still in its queue
        assert release_dispatched(session) == [job_id(db_url, "sent")]
    assert placed(db_url) == {}  # h3 is full, h1 and h2 are gone
    assert wait_of(db_url)["sent"].reason == "pool_busy"

"""Queue places: ranked once by the dispatcher's pass and stored; reads look them up.

The cost of a read must not grow with the queue: the statements a look-up sends are counted at
10 and at 1,000 waiting jobs, and the pass that ranks them is the one that writes.
"""

from __future__ import annotations

import json
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update

from store import places
from store.db import session_scope
from store.models import Job, JobStatus, QueuePlaces
from store.scheduler import Wait, waits
from tests.databases import statements
from worker.dispatcher import dispatch_once

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def add_waiting(db_url: str, count: int, start: int = 0, **values: Any) -> list[str]:
    rows = [
        dict(
            id=f"job{start + i:06d}",
            name="j",
            spec={},
            team="t",
            created_at=T0 + timedelta(seconds=start + i),
        )
        | values
        for i in range(count)
    ]
    with session_scope(db_url) as session:
        session.execute(insert(Job), rows)
    return [row["id"] for row in rows]


def lookup(db_url: str, ids: list[str]) -> dict[str, Any]:
    with session_scope(db_url) as session:
        keys = session.execute(select(Job.id, Job.status).where(Job.id.in_(ids))).all()
        return places.lookup(session, keys)


def serial(db_url: str) -> int | None:
    with session_scope(db_url) as session:
        return session.scalar(select(QueuePlaces.serial))


def test_a_job_is_unplaced_until_a_pass_ranks_it_then_shows_what_ranking_now_gives(db_url: str) -> None:
    ids = add_waiting(db_url, 5)
    assert {w.reason for w in lookup(db_url, ids).values()} == {"scheduling"}
    assert all(w.position is None for w in lookup(db_url, ids).values())
    dispatch_once(db_url, lambda *_: None)  # no worker: nothing is handed over, every job is ranked
    with session_scope(db_url) as session:
        live = waits(session, session.execute(select(Job.id, Job.status)).all())
    assert lookup(db_url, ids) == live
    assert [live[i].position for i in ids] == [1, 2, 3, 4, 5]
    late = add_waiting(db_url, 1, start=10)
    assert lookup(db_url, late)[late[0]] == places.SCHEDULING  # until the next pass
    # a page without a waiting job costs no query at all
    done = add_waiting(db_url, 1, start=20, status=JobStatus.SUCCEEDED)
    with statements(db_url) as sent, session_scope(db_url) as session:
        assert places.lookup(session, [session.get(Job, done[0])]) == {}
    assert not [s for s in sent if "queue_places" in s]


def test_an_unchanged_pass_writes_nothing_and_a_change_moves_the_serial(db_url: str) -> None:
    add_waiting(db_url, 3)
    dispatch_once(db_url, lambda *_: None)
    first = serial(db_url)
    dispatch_once(db_url, lambda *_: None)
    assert serial(db_url) == first  # nothing changed: no write, every process keeps its copy
    add_waiting(db_url, 1, start=5, priority=1)  # jumps the queue: everyone else moves back
    dispatch_once(db_url, lambda *_: None)
    assert serial(db_url) == (first or 0) + 1


def test_a_read_costs_the_same_statements_at_10_and_1000_waiting_jobs(db_url: str) -> None:
    ids = add_waiting(db_url, 10)
    dispatch_once(db_url, lambda *_: None)
    lookup(db_url, ids[:1])  # this process's copy of the places, loaded once per pass
    with statements(db_url) as small:
        assert lookup(db_url, ids[:1])[ids[0]].position == 1
    add_waiting(db_url, 990, start=100)
    dispatch_once(db_url, lambda *_: None)
    lookup(db_url, ids[:1])
    with statements(db_url) as large:
        assert lookup(db_url, ids[:1])[ids[0]].position == 1
    # the page's keys, then the places' serial (a primary-key read): nothing ranks or scans the queue
    assert len(small) == len(large) == 2
    assert "queue_places" in large[1] and "jobs" not in large[1]


def test_the_stored_form_keeps_every_place_and_a_row_in_the_earlier_form_is_still_read(db_url: str) -> None:
    ids = add_waiting(db_url, 4) + add_waiting(db_url, 2, start=10, queue="a100", gpus=1)
    dispatch_once(db_url, lambda *_: None)
    with session_scope(db_url) as session:
        live = waits(session, session.execute(select(Job.id, Job.status)).all())
        body = json.loads(zlib.decompress(session.scalar(select(QueuePlaces.places)) or b""))
    assert lookup(db_url, ids) == live
    assert len({(w.reason, w.message) for w in live.values()}) == len(body["reasons"]) == 2  # shared
    # a row as a version before this form stored it: one [id, position, reason, message] per job
    earlier = [[i, n, "pool_busy", f"{n - 1} job(s) ahead"] for n, i in enumerate(ids, start=1)]
    with session_scope(db_url) as session:
        session.execute(
            update(QueuePlaces).values(
                serial=QueuePlaces.serial + 1, places=zlib.compress(json.dumps(earlier).encode())
            )
        )
    assert lookup(db_url, ids[-1:]) == {ids[-1]: Wait(6, "pool_busy", "5 job(s) ahead")}


def test_a_woken_pass_ranks_only_when_the_places_are_older_than_its_share_of_the_last_ranking(
    db_url: str,
) -> None:
    """A burst of submissions wakes a pass for each: with ``rank_share``, a pass that hands nothing
    over leaves the places as they are while they are younger than that many times the last
    ranking's time; after that, or in a pass without it (the dispatcher's ticks), it ranks."""
    add_waiting(db_url, 3)
    dispatch_once(db_url, lambda *_: None)  # ranks, and this process learns what ranking takes
    first = serial(db_url)
    late = add_waiting(db_url, 1, start=10)
    dispatch_once(db_url, lambda *_: None, rank_share=1e9)  # the places are younger than that
    assert serial(db_url) == first
    assert lookup(db_url, late)[late[0]] == places.SCHEDULING
    with session_scope(db_url) as session:  # the same places, written an hour ago
        session.execute(update(QueuePlaces).values(computed_at=datetime.now(UTC) - timedelta(hours=1)))
    dispatch_once(db_url, lambda *_: None, rank_share=1.0)  # older than the share: ranked
    assert serial(db_url) == (first or 0) + 1
    assert lookup(db_url, late)[late[0]].position == 4
    again = add_waiting(db_url, 1, start=20)
    dispatch_once(db_url, lambda *_: None, rank_share=1e9)
    assert lookup(db_url, again)[again[0]] == places.SCHEDULING
    dispatch_once(db_url, lambda *_: None)  # a tick: ranked, whatever their age
    assert lookup(db_url, again)[again[0]].position == 5

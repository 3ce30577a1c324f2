"""The first query on the event loop (``store.loop_reads``): the same answer as the session's
(``store.reads.open_read``) for every kind of token and job, and a pool that waits its turn, says
when none came free, and replaces a connection that died."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import update

from store import loop_reads
from store.db import get_engine, session_scope
from store.identity import create_team, create_token, create_user, revoke_token
from store.jobs import JobKeyRow, JobQuery, job_keys
from store.loop_reads import LoopPoolTimeout, LoopReads, SqliteLoopReads, loop_reads_for
from store.models import Job, JobStatus, as_utc
from store.places import refresh
from store.reads import Opening, open_read
from tests.databases import PG_ADMIN, migrated


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    with migrated("postgres", tmp_path, "distillery_loop_reads") as url:
        yield url


def _seed(url: str) -> dict[str, str]:
    with session_scope(url) as session:
        create_team(session, "blue")
        create_user(session, "ann", team="blue", role="member")
        _, live = create_token(session, "ann")
        revoked, gone = create_token(session, "ann")
        revoke_token(session, revoked.id)
        waiting = Job(name="w", owner="ann", team="blue", spec={}, status=JobStatus.QUEUED, queue="any")
        deleted = Job(name="d", owner="ann", team="blue", spec={}, status="succeeded", queue="any")
        session.add_all([waiting, deleted])
        session.flush()
        deleted.deleted_at = deleted.created_at
        ids = {"live": live, "revoked": gone, "waiting": waiting.id, "deleted": deleted.id}
    with session_scope(url) as session:
        refresh(session)  # a stored serial, as a dispatcher pass leaves it
    return ids


def test_the_loops_first_query_answers_as_the_sessions_does(db_url: str) -> None:
    ids = _seed(db_url)
    asks = [
        (ids["live"], None),
        (ids["live"], ids["waiting"]),
        (ids["live"], ids["deleted"]),
        (ids["live"], "no-such-job"),
        (ids["revoked"], ids["waiting"]),
        ("dst_unknown", None),
    ]

    async def on_loop() -> list[Opening]:
        reads = loop_reads_for(db_url)
        assert reads is not None
        try:
            return [await reads.open_read(secret, job_id) for secret, job_id in asks]
        finally:
            await reads.aclose()

    loop_answers = asyncio.run(on_loop())
    with session_scope(db_url) as session:
        session_answers = [open_read(session, secret, job_id) for secret, job_id in asks]
    assert loop_answers == session_answers
    live, waiting, deleted, missing, revoked, unknown = loop_answers
    assert live.token is not None and live.token.caller.team == "blue" and live.serial is not None
    assert waiting.head is not None and waiting.head.status is JobStatus.QUEUED and not waiting.head.deleted
    assert deleted.head is not None and deleted.head.deleted
    assert missing.token is not None and missing.head is None
    assert revoked == unknown == Opening(None, None, None)


def test_a_read_waits_for_a_free_connection_and_gives_up_after_the_timeout(pg_url: str) -> None:
    ids = _seed(pg_url)

    async def main() -> tuple[int, str]:
        reads = LoopReads(pg_url, size=1, timeout_s=0.3)
        try:
            # ten at once on one connection: each waits its turn, none fails
            answers = await asyncio.gather(*(reads.open_read(ids["live"]) for _ in range(10)))
            held = await reads._take()  # the only connection, held: the next read times out
            try:
                with pytest.raises(LoopPoolTimeout) as raised:
                    await reads.open_read(ids["live"])
            finally:
                reads._give_back(held)
            return sum(a.token is not None for a in answers), str(raised.value)
        finally:
            await reads.aclose()

    served, why = asyncio.run(main())
    assert served == 10 and "no connection came free in 0 s" in why


def test_a_connection_that_died_is_replaced(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = _seed(pg_url)

    async def pid(reads: LoopReads) -> int:
        slot = await reads._take()
        try:
            connection = await reads._ready(slot)
            row = await (await connection.execute("SELECT pg_backend_pid()")).fetchone()
            assert row is not None
            return int(row[0])
        finally:
            reads._give_back(slot)

    async def main() -> tuple[int, int, int, bool]:
        reads = LoopReads(pg_url, size=1)
        try:
            first = await pid(reads)
            assert await pid(reads) == first  # kept open between reads
            with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (first,))
            # idle "long enough": the next read pings it first, finds it dead, opens another
            monkeypatch.setattr(loop_reads, "PING_AFTER_IDLE_S", 0.0)
            after_idle = await pid(reads)
            admin_kill = psycopg.connect(PG_ADMIN, autocommit=True)
            with admin_kill:
                admin_kill.execute("SELECT pg_terminate_backend(%s)", (after_idle,))
            # not pinged (just used): the read itself fails, and the next one gets a new connection
            monkeypatch.setattr(loop_reads, "PING_AFTER_IDLE_S", 3600.0)
            failed = False
            try:
                await reads.open_read(ids["live"])
            except loop_reads.LoopError:
                failed = True
            again = await reads.open_read(ids["live"])
            return first, after_idle, await pid(reads), failed and again.token is not None
        finally:
            await reads.aclose()

    first, after_idle, last, failed_then_served = asyncio.run(main())
    assert after_idle != first and last != after_idle and failed_then_served


def test_postgresql_through_psycopg_and_a_sqlite_file_read_on_the_loop(tmp_path: Path) -> None:
    made = loop_reads_for("postgresql+psycopg://u:secret@h:5433/db?sslmode=require")
    assert isinstance(made, LoopReads) and made.dsn == "postgresql://u:secret@h:5433/db?sslmode=require"
    on_file = loop_reads_for(f"sqlite:///{tmp_path / 'x.db'}")
    assert isinstance(on_file, SqliteLoopReads) and on_file.path == str(tmp_path / "x.db")
    assert loop_reads_for("postgresql+psycopg2://u@h/db") is None  # no asyncio side
    assert loop_reads_for("sqlite:///:memory:") is None  # another connection: another database


def test_a_busy_sqlite_database_is_an_error_at_once_not_a_wait(tmp_path: Path) -> None:
    with migrated("sqlite", tmp_path, "busy") as url:
        ids = _seed(url)
        reads = loop_reads_for(url)
        assert isinstance(reads, SqliteLoopReads)
        get_engine(url).dispose()  # alone with the file: a writer may lock readers out
        writer = sqlite3.connect(reads.path, isolation_level=None)
        # what a reader in WAL mode rarely meets (a log's recovery, say): a lock it must wait for
        writer.execute("PRAGMA locking_mode=EXCLUSIVE")
        writer.execute("BEGIN EXCLUSIVE")
        writer.execute("UPDATE api_tokens SET label = 'locked'")
        try:
            started = time.monotonic()
            with pytest.raises(loop_reads.LoopError):
                asyncio.run(reads.open_read(ids["live"]))
            assert time.monotonic() - started < 1  # the thread's way waits; the loop must not
        finally:
            writer.execute("ROLLBACK")
            writer.close()
        assert asyncio.run(reads.open_read(ids["live"])).token is not None  # opened afresh
        asyncio.run(reads.aclose())


def test_a_place_given_back_goes_to_the_longest_waiting_read_not_to_a_newcomer() -> None:
    async def main() -> list[str]:
        reads = LoopReads("postgresql+psycopg://u@h/db", size=1)  # no connection is made here
        served: list[str] = []

        async def read(name: str) -> None:
            slot = await reads._take()
            served.append(name)
            await asyncio.sleep(0)
            reads._give_back(slot)

        held = await reads._take()
        first = asyncio.create_task(read("first"))
        second = asyncio.create_task(read("second"))
        await asyncio.sleep(0)  # both wait, in that order
        reads._give_back(held)
        # handed to the first waiter at once: a read arriving now finds nothing free and waits
        assert reads._free == []
        newcomer = asyncio.create_task(read("newcomer"))
        await asyncio.gather(first, second, newcomer)
        return served

    assert asyncio.run(main()) == ["first", "second", "newcomer"]


def test_a_pages_keys_on_the_loop_are_the_sessions_for_every_filter(db_url: str) -> None:
    names = ["50% off", "50_off", "a/b", "plain", "PLAIN too", "x"]
    with session_scope(db_url) as session:
        for team in ("blue", "red"):
            create_team(session, team)
        ids = {}
        for i, name in enumerate(names):
            status = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED)[i % 3]
            job = Job(name=name, owner="ann" if i % 2 else "bob", team="blue" if i < 4 else "red")
            job.spec, job.status, job.queue = {}, status, "any"
            session.add(job)
            session.flush()
            ids[name] = job.id
        session.execute(update(Job).where(Job.name == "x").values(deleted_at=Job.created_at))
    with session_scope(db_url) as session:
        every = job_keys(session, JobQuery(), 50)
    third = every[2]
    queries = [
        JobQuery(),
        JobQuery(teams={"blue"}),
        JobQuery(teams=set()),  # another team's, asked by a member: nothing
        JobQuery(teams=["red", "blue", "red"]),
        JobQuery(statuses=[JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.QUEUED]),
        JobQuery(owner="ann"),
        JobQuery(name="%"),
        JobQuery(name="_"),
        JobQuery(name="/"),
        JobQuery(name="plain"),
        JobQuery(sweep="no-such-sweep"),
        JobQuery(teams={"blue"}, after=(as_utc(third.created_at), third.id)),
        JobQuery(teams={"blue"}, statuses=[JobStatus.SUCCEEDED], owner="bob", name="o"),
    ]

    async def on_loop() -> list[list[JobKeyRow]]:
        reads = loop_reads_for(db_url)
        assert reads is not None
        try:
            return [await reads.job_keys(query, limit) for query in queries for limit in (2, 50)]
        finally:
            await reads.aclose()

    loop_answers = asyncio.run(on_loop())
    with session_scope(db_url) as session:
        session_answers = [job_keys(session, query, limit) for query in queries for limit in (2, 50)]
    assert loop_answers == session_answers
    found = [[key.id for key in keys] for keys in loop_answers[1::2]]  # each query's, limit 50
    assert len(every) == 5 and ids["x"] not in [key.id for key in every]  # the deleted one is not listed
    assert [key.created_at for key in every] == sorted((key.created_at for key in every), reverse=True)
    assert found[2] == [] and len(found[1]) == 4 and len(found[3]) == 5 and len(found[5]) == 2
    assert found[6] == [ids["50% off"]] and found[7] == [ids["50_off"]] and found[8] == [ids["a/b"]]
    assert set(found[9]) == {ids["plain"], ids["PLAIN too"]} and found[10] == []
    assert found[11] == [key.id for key in every[3:] if key.id in found[1]]
    assert [len(keys) for keys in loop_answers[0::2]] == [min(2, len(page)) for page in found]
    assert all(isinstance(key.created_at, datetime) for key in loop_answers[0])

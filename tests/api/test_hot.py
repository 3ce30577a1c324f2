"""The hot reads (``api.hot``): on the event loop where the database has an asyncio driver, the
full answers of a job kept by its ETag (``api.bodies``), and the guarantees that must hold anyway:
a revoked token, another team, a deleted job, a job that changed."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from api import auth, hot
from api.app import create_app
from api.bodies import PAGE, Bodies
from api.loops import PerLoop
from api.ratelimit import RateLimiter
from store.db import session_scope
from store.identity import revoke_token
from store.loop_reads import LoopPoolTimeout, LoopReads, SqliteLoopReads
from store.models import Job
from store.settings import Settings
from tests.api.conftest import FakeBroker, make_settings
from tests.api.support import Member, assert_problem, move, new_member, rank, spec, unique


def submit(client: TestClient) -> dict[str, Any]:
    response = client.post("/v1/jobs", json=spec(name=unique()))
    assert response.status_code == 202, response.text
    return response.json()


def count_thread_trips(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """From now on, every trip a hot read makes to a worker thread (``api.hot._on_thread``)."""
    trips: list[object] = []
    to_thread = hot._on_thread

    async def counted(state: Any, run: Any) -> Any:
        trips.append(run)
        return await to_thread(state, run)

    monkeypatch.setattr(hot, "_on_thread", counted)
    return trips


def kept(client: TestClient) -> Bodies:
    bodies = client.app.state.distillery.job_bodies  # type: ignore[attr-defined]
    assert isinstance(bodies, Bodies)
    return bodies


def test_a_job_polled_without_an_etag_is_answered_from_its_kept_body_until_it_changes(
    client: TestClient, settings: Settings
) -> None:
    job = submit(client)
    rank(settings.db_url)
    first = client.get(f"/v1/jobs/{job['id']}")
    tag = first.headers["etag"]
    assert kept(client).get(job["id"], tag) == first.content  # built once, kept by its ETag
    again = client.get(f"/v1/jobs/{job['id']}")
    assert (again.content, again.headers["etag"]) == (first.content, tag)

    # a change the API did not make (a worker's): a new version, a new key, a new answer
    move(settings.db_url, job["id"], "starting", "running")
    with session_scope(settings.db_url) as session:
        progress = {"stage": "student", "epoch": 1, "epochs": 3, "fraction": 0.5}
        session.execute(
            update(Job).where(Job.id == job["id"]).values(progress=progress, version=Job.version + 1)
        )
    changed = client.get(f"/v1/jobs/{job['id']}")
    assert changed.headers["etag"] != tag
    assert changed.json()["status"] == "running" and changed.json()["progress"] == progress

    # a move in the queue changes a waiting job's place, not its version: a new answer too
    waiting = submit(client)
    rank(settings.db_url)
    before = client.get(f"/v1/jobs/{waiting['id']}").json()
    submit_ahead = client.post("/v1/jobs", json=spec(name=unique(), resources={"priority": "high"}))
    assert submit_ahead.status_code == 202
    rank(settings.db_url)
    after = client.get(f"/v1/jobs/{waiting['id']}").json()
    assert after["version"] == before["version"]
    assert after["queue_position"] == before["queue_position"] + 1


def test_a_page_of_the_list_is_kept_by_its_etag_and_a_change_on_it_makes_another(
    client: TestClient, settings: Settings
) -> None:
    jobs = [submit(client) for _ in range(3)]
    rank(settings.db_url)
    first = client.get("/v1/jobs", params={"limit": 2})
    assert kept(client).get(PAGE, first.headers["etag"]) == first.content
    assert client.get("/v1/jobs", params={"limit": 2}).content == first.content
    move(settings.db_url, jobs[-1]["id"], "cancelled")  # the newest: on the first page
    changed = client.get("/v1/jobs", params={"limit": 2})
    assert changed.headers["etag"] != first.headers["etag"]
    assert changed.json()["items"][0]["status"] == "cancelled"
    move(settings.db_url, jobs[0]["id"], "cancelled")  # the oldest, on the next page: this one stays
    assert client.get("/v1/jobs", params={"limit": 2}).headers["etag"] == changed.headers["etag"]


def test_a_kept_body_is_never_shown_to_another_team_nor_once_the_job_is_deleted(
    client: TestClient, settings: Settings, broker: FakeBroker, db_url: str
) -> None:
    job = submit(client)
    seen = client.get(f"/v1/jobs/{job['id']}")
    assert kept(client).get(job["id"], seen.headers["etag"]) is not None
    stranger = new_member(db_url)
    assert_problem(client.get(f"/v1/jobs/{job['id']}", headers=stranger.headers), 404)
    assert_problem(
        client.get(
            f"/v1/jobs/{job['id']}", headers={**stranger.headers, "If-None-Match": seen.headers["etag"]}
        ),
        404,
    )
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert_problem(client.get(f"/v1/jobs/{job['id']}"), 404)


def test_a_revoked_token_is_refused_at_its_next_read_on_every_process(
    settings: Settings, broker: FakeBroker, db_url: str
) -> None:
    member = new_member(db_url)
    apps = [create_app(settings, publish=broker.publish, run_dispatcher=False, check_broker=lambda: None)]
    apps.append(create_app(settings, publish=broker.publish, run_dispatcher=False, check_broker=lambda: None))
    with (
        TestClient(apps[0], headers=member.headers) as one,
        TestClient(apps[1], headers=member.headers) as two,
    ):
        job = submit(one)
        tag = one.get(f"/v1/jobs/{job['id']}").headers["etag"]
        for http in (one, two):  # the answer is kept, the token read: both served
            assert http.get(f"/v1/jobs/{job['id']}").status_code == 200
            assert http.get(f"/v1/jobs/{job['id']}", headers={"If-None-Match": tag}).status_code == 304
        with session_scope(db_url) as session:
            revoke_token(session, member.token_id)
        for http in (one, two):
            for headers in ({}, {"If-None-Match": tag}):
                assert_problem(http.get(f"/v1/jobs/{job['id']}", headers=headers), 401)
            assert_problem(http.get("/v1/jobs"), 401)
            assert_problem(http.get(f"/v1/jobs/{job['id']}/metrics"), 401)


def test_polls_of_a_job_and_of_a_page_run_on_the_event_loop_and_a_pages_rows_once_on_a_thread(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    submit(client)
    job = submit(client)
    rank(client.app.state.distillery.settings.db_url)  # type: ignore[attr-defined]
    tag = client.get(f"/v1/jobs/{job['id']}").headers["etag"]
    page_tag = client.get("/v1/jobs").headers["etag"]
    trips = count_thread_trips(monkeypatch)
    for _ in range(3):
        assert client.get(f"/v1/jobs/{job['id']}", headers={"If-None-Match": tag}).status_code == 304
        assert client.get(f"/v1/jobs/{job['id']}").status_code == 200  # kept: no row loaded
        assert client.get("/v1/jobs", headers={"If-None-Match": page_tag}).status_code == 304
        assert client.get("/v1/jobs").status_code == 200  # kept by its ETag
    assert trips == []  # all on the event loop (store.loop_reads), on PostgreSQL and on SQLite
    for _ in range(2):  # another page (it has a next one): its rows loaded on a thread once, then kept
        assert client.get("/v1/jobs", params={"limit": 1}).status_code == 200
    assert len(trips) == 1


def test_other_routes_check_the_token_on_the_event_loop(
    client: TestClient, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_threads: list[str] = []
    verify = auth.verify

    def counted(session: Any, state: Any, secret: str, found: Any = None) -> Any:
        on_threads.append(secret)
        return verify(session, state, secret, found)

    monkeypatch.setattr(auth, "verify", counted)
    job = submit(client)
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
    assert client.get("/v1/me").status_code == 200
    assert on_threads == []  # store.loop_reads, on PostgreSQL and on SQLite
    # a token the loop's query does not know goes the thread's way: 401 there, as before
    assert_problem(client.get("/v1/me", headers={"Authorization": "Bearer not-a-token"}), 401)
    assert on_threads[-1] == "not-a-token"


def test_no_connection_free_on_the_loop_is_a_503_that_says_so(
    client: TestClient, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if db_url.startswith("sqlite"):
        pytest.skip("SQLite's loop reads open the file itself: no connection to wait for")
    job = submit(client)

    class ExhaustedReads:  # store.loop_reads: the first query of every request
        async def open_read(self, secret: str, job_id: str | None = None) -> None:
            raise LoopPoolTimeout("no connection came free in 30 s")

    state = client.app.state.distillery  # type: ignore[attr-defined]
    with monkeypatch.context() as patched:
        patched.setattr(state.loop_reads, "get", ExhaustedReads)
        for answer in (
            client.get("/v1/jobs"),
            client.get("/v1/jobs/some-job"),
            client.get("/v1/me"),
            client.post("/v1/jobs", json=spec()),
        ):
            problem = assert_problem(answer, 503)
            assert "database connection" in problem["detail"] and answer.headers["retry-after"] == "1"

    async def exhausted(self: Any, query: Any, limit: int) -> None:  # the token read, then none free
        raise LoopPoolTimeout("no connection came free in 30 s")

    monkeypatch.setattr(LoopReads, "job_keys", exhausted)
    problem = assert_problem(client.get("/v1/jobs"), 503)
    assert "database connection" in problem["detail"]
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 200  # the rest is served


def test_a_page_whose_keys_fail_on_the_loop_is_read_on_a_thread(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(3):
        submit(client)
    expected = client.get("/v1/jobs", params={"limit": 2})

    async def failing(self: Any, query: Any, limit: int) -> None:  # SQLite busy, a dropped connection
        raise sqlite3.OperationalError("database is locked")

    trips = count_thread_trips(monkeypatch)
    for reads in (LoopReads, SqliteLoopReads):
        monkeypatch.setattr(reads, "job_keys", failing)
    again = client.get("/v1/jobs", params={"limit": 2})
    assert (again.status_code, again.content, again.headers["etag"]) == (
        200,
        expected.content,
        expected.headers["etag"],
    )
    assert len(trips) == 1  # the whole page on a thread, the token checked once (on the loop)
    tag = expected.headers["etag"]
    assert client.get("/v1/jobs", params={"limit": 2}, headers={"If-None-Match": tag}).status_code == 304


def test_bodies_are_bounded_by_bytes_least_recently_used_out_first() -> None:
    bodies = Bodies(max_bytes=100, max_one=60)
    bodies.put("a", '"1"', b"x" * 40)
    bodies.put("b", '"1"', b"y" * 40)
    assert bodies.get("a", '"1"') == b"x" * 40  # a: used last
    bodies.put("c", '"1"', b"z" * 40)  # 120 bytes: the least recently used (b) goes
    assert bodies.get("b", '"1"') is None and bodies.get("a", '"1"') is not None
    bodies.put("d", '"1"', b"w" * 61)  # larger than one answer may be: not kept
    assert bodies.get("d", '"1"') is None
    assert bodies.get("a", '"2"') is None  # another ETag: another answer


def test_with_no_answers_kept_every_full_get_is_built_again_and_still_right(
    tmp_path: Path, db_url: str, broker: FakeBroker, member: Member
) -> None:
    settings = make_settings(tmp_path, db_url, answer_cache_bytes=0)
    app = create_app(settings, publish=broker.publish, run_dispatcher=False, check_broker=lambda: None)
    with TestClient(app, headers=member.headers) as http:
        job = submit(http)
        rank(db_url)
        first, page = http.get(f"/v1/jobs/{job['id']}"), http.get("/v1/jobs")
        built = kept(http)
        assert (
            built.get(job["id"], first.headers["etag"]) is None
            and built.get(PAGE, page.headers["etag"]) is None
        )
        again = http.get(f"/v1/jobs/{job['id']}")
        assert (again.content, again.headers["etag"]) == (first.content, first.headers["etag"])
        assert http.get("/v1/jobs").content == page.content
        assert http.get("/v1/jobs", headers={"If-None-Match": page.headers["etag"]}).status_code == 304
    bodies = Bodies(max_bytes=0)
    bodies.put("a", '"1"', b"x")
    assert bodies.get("a", '"1"') is None


def test_per_loop_makes_one_per_event_loop_and_closes_it_on_that_loop() -> None:
    closed: list[object] = []

    async def close(made: object) -> None:
        closed.append(made)

    per_loop = PerLoop(object, close)

    async def twice() -> tuple[object, object]:
        return per_loop.get(), per_loop.get()

    async def get_then_close() -> object:
        made = per_loop.get()
        await per_loop.aclose()
        await per_loop.aclose()  # nothing left to close: nothing closed twice
        return made

    one, same = asyncio.run(twice())
    other = asyncio.run(get_then_close())
    assert one is same and other is not one and closed == [other]


def test_rate_limits_counted_in_memory_are_one_window_through_both_doors(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'unused.db'}", rate_limit="3/minute")
    assert settings.rate_limit_store == "memory://"
    limiter = RateLimiter(settings)

    async def async_door() -> int | None:
        return await limiter.retry_after_async("token")

    assert limiter.retry_after("token") is None
    assert asyncio.run(async_door()) is None
    assert limiter.retry_after("token") is None
    wait = asyncio.run(async_door())  # the fourth, whichever door: refused
    assert wait is not None and 1 <= wait <= 60


def test_the_api_closes_its_event_loop_clients_when_it_stops(
    settings: Settings, broker: FakeBroker, member: Member
) -> None:
    app = create_app(settings, publish=broker.publish, run_dispatcher=False, check_broker=lambda: None)
    state = app.state.distillery
    for _ in range(2):  # a second start on a new loop makes its own clients and works
        with TestClient(app, headers=member.headers) as http:
            assert http.get("/v1/jobs").status_code == 200
    assert len(state.loop_reads._made) == 0  # each loop's connections closed with it

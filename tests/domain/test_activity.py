"""A job's metrics and events, read after a cursor; one poll of a followed job."""

from __future__ import annotations

from types import SimpleNamespace

from domain.activity import RowPage, downsample, events_page, metrics_page, poll_job, strided
from store.db import session_scope
from store.identity import create_team, create_token, create_user, revoke_token
from store.jobs import add_event, record_metrics
from store.models import Job, JobStatus, utcnow


def test_strided() -> None:
    assert strided(3, 5) == [0, 1, 2]
    assert strided(10, 2) == [0, 9]
    assert strided(101, 5) == [0, 25, 50, 75, 100]
    assert strided(7, 1) == [6]


def test_downsample_thins_each_series_and_keeps_id_order() -> None:
    rows = [SimpleNamespace(id=i, stage="student", name="loss" if i % 2 else "acc") for i in range(1, 21)]
    kept = downsample(rows, 3)
    assert [r.id for r in kept] == [1, 2, 9, 10, 19, 20]  # first, middle, last of each series


def test_row_page_reads_one_more_to_know_whether_more_follow() -> None:
    assert RowPage.of([5, 6, 7], 2, 4, key=int) == RowPage([5, 6], 6, True)
    assert RowPage.of([5], 2, 4, key=int) == RowPage([5], 5, False)
    assert RowPage.of([], 2, 4, key=int) == RowPage([], 4, False)  # the cursor stays put


def _job(db_url: str) -> str:
    with session_scope(db_url) as session:
        job = Job(name="j", spec={}, team="vision")
        session.add(job)
        session.flush()
        return job.id


def test_metric_pages_follow_the_cursor(db_url: str) -> None:
    job_id = _job(db_url)
    with session_scope(db_url) as session:
        for epoch in range(5):
            record_metrics(session, job_id, "student", epoch, epoch, {"loss": 1.0 / (epoch + 1), "acc": 0.5})
    with session_scope(db_url) as session:
        first = metrics_page(session, job_id, limit=4)
        assert len(first.items) == 4 and first.has_more
        rest = metrics_page(session, job_id, after=first.next_cursor, limit=100)
        assert len(rest.items) == 6 and not rest.has_more
        assert rest.items[0].id > first.next_cursor
        losses = metrics_page(session, job_id, names=["loss"], stage="student")
        assert [r.name for r in losses.items] == ["loss"] * 5
        thinned = metrics_page(session, job_id, names=["loss"], max_points=2)
        assert [r.epoch for r in thinned.items] == [0, 4]
        assert thinned.next_cursor == losses.next_cursor  # past every row read, not only those kept


def test_events_page(db_url: str) -> None:
    job_id = _job(db_url)
    with session_scope(db_url) as session:
        for i in range(3):
            add_event(session, job_id, "log", f"line {i}")
    with session_scope(db_url) as session:
        first = events_page(session, job_id, limit=2)
        assert [e.message for e in first.items] == ["line 0", "line 1"] and first.has_more
        rest = events_page(session, job_id, after=first.next_cursor)
        assert [e.message for e in rest.items] == ["line 2"] and not rest.has_more


def test_a_poll_says_what_changed_and_when_the_job_is_done_or_gone(db_url: str) -> None:
    job_id = _job(db_url)
    with session_scope(db_url) as session:
        create_team(session, "vision")
        create_user(session, "ana", team="vision", role="member")
        token, _ = create_token(session, "ana")
        session.flush()
        token_id = token.id
        add_event(session, job_id, "log", "hello")
    with session_scope(db_url) as session:
        polled = poll_job(session, job_id, seen_version=None, after=0, token_id=token_id, batch=10)
        assert polled is not None and polled.changed and not polled.finished
        assert [e.message for e in polled.events] == ["hello"]
        version, after = polled.job.version, polled.events[-1].id
        again = poll_job(session, job_id, seen_version=version, after=after, token_id=token_id, batch=10)
        assert again is not None and not again.changed and again.events == []
        job = session.get(Job, job_id)
        assert job is not None
        job.status = JobStatus.SUCCEEDED
        add_event(session, job_id, "log", "one")
        add_event(session, job_id, "log", "two")
    with session_scope(db_url) as session:
        full = poll_job(session, job_id, seen_version=version, after=after, token_id=token_id, batch=1)
        assert full is not None and not full.finished  # a full batch: more events may wait
        last = poll_job(session, job_id, seen_version=version, after=after, token_id=token_id, batch=10)
        assert last is not None and last.finished and len(last.events) == 2
        revoke_token(session, token_id)
    with session_scope(db_url) as session:
        assert poll_job(session, job_id, seen_version=None, after=0, token_id=token_id, batch=10) is None
        other, _ = create_token(session, "ana")
        session.flush()
        assert poll_job(session, job_id, seen_version=None, after=0, token_id=other.id, batch=10) is not None
        session.get(Job, job_id).deleted_at = utcnow()  # type: ignore[union-attr]
        session.flush()
        assert poll_job(session, job_id, seen_version=None, after=0, token_id=other.id, batch=10) is None
        assert poll_job(session, "nope", seen_version=None, after=0, token_id=other.id, batch=10) is None

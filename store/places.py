"""Queue places: what each waiting job shows (its position and the reason it waits), computed once
per dispatcher pass and stored, so that no read ranks the queue.

Ranking the waiting jobs (``store.scheduler.all_waits``) costs time in proportion to their number:
at 10,000 waiting jobs, far more than a read may spend. So the dispatcher pass, which loads them
anyway to hand jobs over, ranks them once, under ``store.locks.DISPATCH`` and in the transaction
that marks the jobs it dispatched, and ``store`` writes every place into one row (``QueuePlaces``,
id 1): job id -> (position, reason, message), compressed JSON (``_encode``), with a ``serial`` that
grows by one each time the places change (a pass whose places are unchanged writes nothing).

Reads (``lookup``) cost the same at 10 and at 10,000 waiting jobs: one primary-key read of the
serial, then dictionary look-ups in this process's copy of the places, reloaded only when the serial
moved (once per changed pass per process, a few milliseconds at 10,000 jobs).

What a place may lag behind:
- a job submitted, or sent back to the queue, since the last pass is not placed yet: it shows
  ``SCHEDULING`` (no position) until the next pass, which its submission wakes at once (at most
  ``dispatch_interval_s`` otherwise);
- the positions of the others move at the next pass too (a job ahead that ended or was cancelled
  still counts until then).
Started and finished jobs never show a place: the caller asks only for jobs whose status waits.

During a burst of submissions each one wakes a pass, and a ranking at 10,000 waiting jobs costs
tens of milliseconds in an API process (rank, encode, write a 200 kB row): passes that wake-ups ask
for rank only when the last ranking stored is older than ``share`` times what this process's last
ranking took (``store``'s ``share``); a new job shows ``SCHEDULING`` that much longer, and the pass
that skips it still hands jobs over.

Functions take a session and never commit.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from sqlalchemy import make_url, select, update
from sqlalchemy.orm import Session

from store.locks import DISPATCH, hold
from store.models import WAITING, QueuePlaces, as_utc, utcnow
from store.scheduler import JobKey, Snapshot, Wait, all_waits, snapshot

ROW = 1

SCHEDULING = Wait(
    None,
    "scheduling",
    "submitted (or back in the queue) since the scheduler's last pass: its next pass, in a few "
    "seconds at most, gives it its place",
)


def store(session: Session, snap: Snapshot, share: float | None = None) -> bool:
    """Rank every waiting job of ``snap`` and store the places if they changed; True if written.

    Call it with ``store.locks.DISPATCH`` held, in the transaction whose marks ``snap`` shows.

    Ranking is the expensive part (tens of milliseconds at 10,000 waiting jobs), and the queue is
    mostly as the last pass left it: if ``snap`` shows what this process's last ranking saw, and
    the stored places are still the ones it wrote or read, nothing is ranked.

    With ``share``, nothing is ranked either while the stored places are younger than ``share``
    times the time this process's last ranking took, from its start to its write (module
    docstring): the next pass without ``share`` (at most ``dispatch_interval_s`` away) or after
    that time ranks. The age is by the writer's clock: one ahead of this host's never delays it.
    """
    key = str(session.get_bind().engine.url)
    seen = snap.fingerprint()
    row = session.execute(
        select(QueuePlaces.digest, QueuePlaces.computed_at).where(QueuePlaces.id == ROW)
    ).one_or_none()
    stored, computed_at = row if row is not None else (None, None)
    if stored is not None and _ranked.get(key) == (seen, stored):
        return False
    if share is not None and _fresh(key, computed_at, share):
        return False
    started = time.monotonic()
    body = _encode(all_waits(snap))
    digest = hashlib.sha256(body).hexdigest()
    _ranked[key] = (seen, digest)
    if stored == digest:
        return False
    packed = zlib.compress(body, 1)
    if stored is None:
        session.add(QueuePlaces(id=ROW, serial=1, digest=digest, computed_at=utcnow(), places=packed))
        session.flush()
    else:
        session.execute(
            update(QueuePlaces)
            .where(QueuePlaces.id == ROW)
            .values(serial=QueuePlaces.serial + 1, digest=digest, computed_at=utcnow(), places=packed)
            .execution_options(synchronize_session=False)
        )
    _took[key] = time.monotonic() - started
    return True


def _fresh(key: str, computed_at: datetime | None, share: float) -> bool:
    """Whether places stored at ``computed_at`` are younger than ``share`` times this process's
    last ranking's time (never, before this process has ranked)."""
    took = _took.get(key)
    if computed_at is None or took is None:
        return False
    return 0 <= (utcnow() - as_utc(computed_at)).total_seconds() < share * took


_ranked: dict[str, tuple[int, str]] = {}
"""By database URL: what this process's last ranking saw (``Snapshot.fingerprint``) and the
digest of the places it gave. Written only by the pass that holds the dispatch lock."""

_took: dict[str, float] = {}
"""By database URL: the wall time, in seconds, of this process's last ranking that was written
(ranked, encoded, stored): it counts the database's share of the work, and grows when the
machine is busy, which spaces the rankings a ``share`` asks for further apart."""


@dataclass(frozen=True)
class _Copy:
    serial: int
    places: dict[str, Wait]


_copies: dict[str, _Copy] = {}  # by database URL: this process's copy of the places
_lock = threading.Lock()


def _encode(places: dict[str, Wait]) -> bytes:
    """The stored form, before compression: the job ids in order, each one's position, and each
    one's index among the distinct (reason, message) pairs, which thousands of jobs share (mostly
    one per queue and reason). At 10,000 waiting jobs that is 420 kB of JSON, written in about
    half the time of the 1 MB that one ``[id, position, reason, message]`` per job made."""
    ids = sorted(places)  # one order whatever the ranking's: equal places, equal digests
    kinds: dict[tuple[str, str], int] = {}
    positions: list[int | None] = []
    of: list[int] = []
    for job_id in ids:
        wait = places[job_id]
        positions.append(wait.position)
        of.append(kinds.setdefault((wait.reason, wait.message), len(kinds)))
    shown = {"ids": ids, "positions": positions, "kinds": of, "reasons": list(kinds)}
    return json.dumps(shown, separators=(",", ":")).encode()


def _decode(packed: bytes) -> dict[str, Wait]:
    found = json.loads(zlib.decompress(packed))
    if isinstance(found, list):  # one [id, position, reason, message] per job: a row stored
        # by a version before this form, read until the next pass writes it again
        return {job_id: Wait(position, reason, message) for job_id, position, reason, message in found}
    reasons = found["reasons"]
    return {
        job_id: Wait(position, *reasons[kind])
        for job_id, position, kind in zip(found["ids"], found["positions"], found["kinds"], strict=True)
    }


@lru_cache(maxsize=16)
def _key(db_url: str) -> str:
    return str(make_url(db_url))  # as ``current`` keys its copy: the URL its engine renders


class Ask:
    """The serial is not known yet: ``current`` reads it."""


ASK = Ask()


def current(session: Session, serial: int | Ask | None = ASK) -> dict[str, Wait]:
    """The places of the last pass, from this process's copy while the stored serial has not moved.
    ``serial``: the stored serial if the caller has just read it (``store.reads``), else ``ASK``."""
    if isinstance(serial, Ask):
        serial = session.scalar(select(QueuePlaces.serial).where(QueuePlaces.id == ROW))
    if serial is None:
        return {}  # no pass has stored places yet
    key = str(session.get_bind().engine.url)
    if (places := _held_at(key, serial)) is not None:
        return places
    found = session.execute(select(QueuePlaces.serial, QueuePlaces.places).where(QueuePlaces.id == ROW)).one()
    copy = _Copy(found.serial, _decode(found.places))
    with _lock:
        held = _copies.get(key)
        if held is None or held.serial < copy.serial:
            if len(_copies) >= 16:  # one per database this process reads; tests make many
                _copies.clear()
            _copies[key] = copy
    return copy.places


def held(db_url: str, serial: int | None) -> dict[str, Wait] | None:
    """``current`` with no query: the places of serial ``serial`` of the database at ``db_url``,
    if this process's copy is that recent; None if it is not (``current`` reads them then)."""
    return {} if serial is None else _held_at(_key(db_url), serial)


def _held_at(key: str, serial: int) -> dict[str, Wait] | None:
    copy = _copies.get(key)
    return copy.places if copy is not None and copy.serial >= serial else None


def place_of(places: dict[str, Wait], job: JobKey) -> Wait | None:
    """Where ``job`` stands among ``places`` (``lookup``'s answer for one job)."""
    return places.get(job.id, SCHEDULING) if job.status in WAITING else None


def lookup(session: Session, jobs: Sequence[JobKey], serial: int | Ask | None = ASK) -> dict[str, Wait]:
    """The place of each job given whose status waits (``SCHEDULING`` if the last pass did not
    see it waiting); no query at all for a page without such a job, nor, with the ``serial`` known
    and this process's copy current, for one with some."""
    return places_in(current(session, serial), jobs) if any(job.status in WAITING for job in jobs) else {}


def places_in(places: dict[str, Wait], jobs: Sequence[JobKey]) -> dict[str, Wait]:
    """``lookup`` among ``places``: the place of each job given whose status waits."""
    return {job.id: places.get(job.id, SCHEDULING) for job in jobs if job.status in WAITING}


def refresh(session: Session) -> bool:
    """Rank and store the places now, as a dispatcher pass ends (for tools and tests that run no
    dispatcher); True if they changed."""
    hold(session, DISPATCH)
    return store(session, snapshot(session))

"""Fair scheduling: jobs wait in the database until the pool has room for them.

A job is handed to the broker (*dispatched*) only when an online worker can take it at once, so
the broker never holds a backlog that one team could fill: the order in which waiting jobs start
is decided here, at each slot, and can still change when another team submits.

Slots. Each online worker (``store.models.Worker``, kept by heartbeats) runs one job at a time
and serves its own GPU type plus ``any``; a worker whose type is ``any`` serves only ``any``. A
job holds a slot from the moment it is dispatched (``queued`` with ``published_at`` set) through
``starting``, ``running`` and ``cancelling`` until it ends. Free slots are counted per GPU type:

1. a started job (``starting | running | cancelling``) holds the slot of the worker named by its
   lease (``<worker id>:<pid>``), whatever the job asked for: an ``any`` job running on an a100
   worker takes that a100 worker away from a100 jobs;
2. a dispatched job not yet claimed (or a started one whose worker is not online) holds a slot of
   its own type; an ``any`` one is counted on an ``any`` worker when one is free, else on the type
   with the most free workers. That is an approximation: the broker may give it to another worker
   serving ``gpu.any``. The count is right again once the job is claimed (rule 1), and until then
   the worst case is a dispatched T job waiting in the broker for the next T worker, while a
   worker of another type the count thought busy sits idle for a pass. A pass never hands over
   more jobs than there are free slots; when a worker goes away, the jobs already dispatched
   beyond its type's workers wait in the broker and take no other type's slot.

A worker that died without signing off counts as online until the reaper marks it lost
(``worker_timeout_s``): a job handed over for its slot meanwhile waits in the broker for another.

Order. Waiting jobs are ``queued`` with no ``published_at``, or ``retrying`` (the reaper clears
``published_at``). Within a team: higher priority first, then older first. Between teams, each
free slot goes to the team with the fewest occupied slots (dispatched + started) among those
below their ``max_running`` with a job that fits a free slot; ties go to the team whose candidate
job is the oldest. A team's candidate is its first job, in its own order, that fits a free slot
(a job for a busy type does not hold back the team's jobs for a free one). ``Job.team`` None is a
team of its own, without limits, as is a team name with no ``Team`` row.

Positions. ``Wait.position`` is a job's 1-based place in its GPU-type queue (``Job.queue``):
first the jobs of that queue dispatched and not yet claimed, in the order they were handed over;
then its waiting jobs in the order the rule above would start them if slots for that queue
opened one at a time and nothing else changed. Teams at their ``max_running`` (from the start or
as the simulation fills them) go last, in the same fair order as if their limit were lifted: when
one of their jobs ends is not known. An ``any`` job may also take a slot of type T, so the jobs
of queue T can be passed by ``any`` jobs that their position does not count.

Reasons (``Wait.reason``, stable codes):

- ``dispatched``: handed to the pool; it starts when a worker takes it from the broker.
- ``dispatching``: a worker is free for it; the next dispatcher pass hands it over.
- ``no_worker``: no online worker serves its GPU type (the message names the type).
- ``team_limit``: its team already has ``max_running`` jobs (the message names the limit).
- ``pool_busy``: every worker that could run it is busy, or promised to jobs ahead of it.

Functions take a session and never commit; ``plan`` expects ``store.locks.DISPATCH`` held.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from store.models import HELD, WAITING, Job, JobStatus, Team, Worker, as_utc

ANY = "any"
IS_WAITING = or_(
    and_(Job.status == JobStatus.QUEUED, Job.published_at.is_(None)), Job.status == JobStatus.RETRYING
)
IS_DISPATCHED = and_(Job.status == JobStatus.QUEUED, Job.published_at.is_not(None))

TeamKey = str | None  # None: the jobs without a team, a team of their own


@dataclass(frozen=True)
class Wait:
    """Why a job has not started yet, and its place in its GPU-type queue (module docstring)."""

    position: int
    reason: str
    message: str


@dataclass(frozen=True)
class _Waiting:
    id: str
    team: TeamKey
    queue: str
    priority: int
    created_at: datetime

    @property
    def key(self) -> tuple[int, datetime, str]:
        """The order within a team: higher priority, then older (the id only breaks exact ties)."""
        return (-self.priority, self.created_at, self.id)


@dataclass
class _Snapshot:
    workers: Counter[str]  # online workers per GPU type
    free: Counter[str]  # their free slots per GPU type
    occupied: Counter[TeamKey]  # slots held per team
    limits: dict[TeamKey, int]  # max_running of the teams that have one
    waiting: list[_Waiting]
    dispatched: list[tuple[str, str, datetime]]  # (id, queue, published_at), not yet claimed

    def serving(self, queue: str) -> int:
        return sum(self.workers.values()) if queue == ANY else self.workers[queue]

    def at_limit(self, team: TeamKey, occupied: Counter[TeamKey]) -> bool:
        limit = self.limits.get(team)
        return limit is not None and occupied[team] >= limit


def _fits(free: Counter[str], queue: str) -> bool:
    return any(n > 0 for n in free.values()) if queue == ANY else free[queue] > 0


def _take(free: Counter[str], queue: str) -> None:
    """Count a job on a slot: an ``any`` job on an ``any`` worker if one is free (module docstring)."""
    if queue == ANY and free[ANY] <= 0:
        queue = max((t for t in free if free[t] > 0), key=lambda t: (free[t], t), default=ANY)
    free[queue] -= 1


def _snapshot(session: Session) -> _Snapshot:
    """The pool, the occupied slots and the waiting jobs: four queries, light columns only."""
    online = dict(session.execute(select(Worker.id, Worker.gpu_type).where(Worker.status == "online")).all())
    workers = Counter(online.values())
    free = Counter(workers)
    occupied: Counter[TeamKey] = Counter()
    dispatched: list[tuple[str, str, datetime]] = []
    unplaced: list[str] = []
    busy: set[str] = set()
    rows = session.execute(
        select(Job.id, Job.team, Job.queue, Job.status, Job.lease_owner, Job.published_at).where(
            or_(Job.status.in_(HELD), IS_DISPATCHED), Job.deleted_at.is_(None)
        )
    ).all()
    for job_id, team, queue, status, lease_owner, published_at in rows:
        occupied[team] += 1
        owner = lease_owner.rsplit(":", 1)[0] if status in HELD and lease_owner else None
        if owner in online and owner not in busy:
            busy.add(owner)
            free[online[owner]] -= 1
        else:
            unplaced.append(queue)
        if status == JobStatus.QUEUED and published_at is not None:  # dispatched, not yet claimed
            dispatched.append((job_id, queue, as_utc(published_at)))
    for queue in sorted(unplaced, key=lambda q: q == ANY):  # the constrained ones first
        if _fits(free, queue):
            _take(free, queue)
    limits: dict[TeamKey, int] = {
        name: n for name, n in session.execute(select(Team.name, Team.max_running)) if n is not None
    }
    waiting = [
        _Waiting(i, t, q, p, as_utc(c))
        for i, t, q, p, c in session.execute(
            select(Job.id, Job.team, Job.queue, Job.priority, Job.created_at).where(
                IS_WAITING, Job.deleted_at.is_(None)
            )
        )
    ]
    return _Snapshot(workers, free, occupied, limits, waiting, dispatched)


def _by_team(jobs: Iterable[_Waiting]) -> dict[TeamKey, deque[_Waiting]]:
    teams: dict[TeamKey, list[_Waiting]] = defaultdict(list)
    for job in jobs:
        teams[job.team].append(job)
    return {team: deque(sorted(js, key=lambda j: j.key)) for team, js in teams.items()}


def _fair_key(occupied: Counter[TeamKey], head: _Waiting) -> tuple[int, datetime, str]:
    """The order between teams: fewest occupied slots, then the oldest candidate job."""
    return (occupied[head.team], head.created_at, head.id)


def _select(snap: _Snapshot, limit: int | None = None) -> list[_Waiting]:
    """The jobs to hand over now, in order: one free slot at a time, by the fair-share rule."""
    free, occupied = Counter(snap.free), Counter(snap.occupied)
    queues: dict[TeamKey, dict[str, deque[_Waiting]]] = defaultdict(dict)
    for job in snap.waiting:
        queues[job.team].setdefault(job.queue, deque()).append(job)
    for per_queue in queues.values():
        for queue, jobs in per_queue.items():
            per_queue[queue] = deque(sorted(jobs, key=lambda j: j.key))
    chosen: list[_Waiting] = []
    while limit is None or len(chosen) < limit:
        best: tuple[tuple[int, datetime, str], _Waiting] | None = None
        for team, per_queue in queues.items():
            if snap.at_limit(team, occupied):
                continue
            heads = [jobs[0] for queue, jobs in per_queue.items() if jobs and _fits(free, queue)]
            if heads:
                head = min(heads, key=lambda j: j.key)
                key = _fair_key(occupied, head)
                if best is None or key < best[0]:
                    best = (key, head)
        if best is None:
            break
        job = best[1]
        queues[job.team][job.queue].popleft()
        _take(free, job.queue)
        occupied[job.team] += 1
        chosen.append(job)
    return chosen


def _ranks(snap: _Snapshot, jobs: Sequence[_Waiting]) -> dict[str, int]:
    """1-based start order of the waiting jobs of one queue, slots opening one at a time."""
    occupied = Counter(snap.occupied)
    teams = _by_team(jobs)
    order: list[str] = []
    capped = [team for team in teams if snap.at_limit(team, occupied)]  # they go last

    def fill(candidates: list[TeamKey], lifted: bool) -> None:
        heap = [(_fair_key(occupied, teams[team][0]), team) for team in candidates]
        heapq.heapify(heap)  # keys end with a job id: never equal, teams never compared
        while heap:
            _key, team = heapq.heappop(heap)
            order.append(teams[team].popleft().id)
            occupied[team] += 1
            if not teams[team]:
                continue
            if not lifted and snap.at_limit(team, occupied):
                capped.append(team)
            else:
                heapq.heappush(heap, (_fair_key(occupied, teams[team][0]), team))

    fill([team for team in teams if team not in capped], lifted=False)
    fill(list(capped), lifted=True)  # as if their limits were lifted
    return {job_id: place for place, job_id in enumerate(order, start=1)}


def plan(session: Session, limit: int | None = None) -> list[Job]:
    """The waiting jobs to hand to the pool now, in order (at most ``limit``).

    Call it with ``store.locks.DISPATCH`` held, and mark each job published (``domain.lifecycle.
    mark_published``) in the same transaction: a second pass then sees those slots taken.
    """
    chosen = [job.id for job in _select(_snapshot(session), limit)]
    if not chosen:
        return []
    rows = {job.id: job for job in session.scalars(select(Job).where(Job.id.in_(chosen)))}
    return [rows[i] for i in chosen if i in rows]


class JobKey(Protocol):
    """What ``waits`` reads of a job: a row or a ``select(Job.id, Job.status, ...)`` tuple."""

    @property
    def id(self) -> str: ...

    @property
    def status(self) -> JobStatus: ...


def waits(session: Session, jobs: Sequence[JobKey]) -> dict[str, Wait]:
    """Position and reason for each job of a page that is waiting or dispatched and unclaimed."""
    if not any(job.status in WAITING for job in jobs):
        return {}  # a page of started or finished jobs costs no query
    snap = _snapshot(session)
    wanted = {job.id for job in jobs}
    result: dict[str, Wait] = {}
    handed: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    for job_id, queue, published_at in snap.dispatched:
        handed[queue].append((published_at, job_id))
    for queue, entries in handed.items():
        for place, (_at, job_id) in enumerate(sorted(entries), start=1):
            if job_id in wanted:
                result[job_id] = Wait(place, "dispatched", _dispatched_message(snap, queue))
    next_up = {job.id for job in _select(snap)}
    queues: dict[str, list[_Waiting]] = defaultdict(list)
    for job in snap.waiting:
        queues[job.queue].append(job)
    occupied = snap.occupied
    for queue, members in queues.items():
        if not any(job.id in wanted for job in members):
            continue
        ranks = _ranks(snap, members)
        ahead = len(handed[queue])
        for job in members:
            if job.id not in wanted:
                continue
            position = ahead + ranks[job.id]
            limit = snap.limits.get(job.team)
            if not snap.serving(queue):
                reason = "no_worker"
                message = (
                    "no worker is online" if queue == ANY else f"no online worker serves GPU type {queue!r}"
                )
            elif limit is not None and occupied[job.team] >= limit:
                reason = "team_limit"
                message = (
                    f"team {job.team!r} has {occupied[job.team]} job(s) in the pool, its limit "
                    f"(max_running={limit}); this one starts after one of them ends"
                )
            elif job.id in next_up:
                reason, message = "dispatching", "a worker is free: the next dispatcher pass hands it over"
            else:
                reason = "pool_busy"
                message = (
                    f"all {snap.serving(queue)} worker(s) that serve {queue!r} are busy or promised "
                    f"to jobs ahead; {position - 1} job(s) ahead in this queue"
                )
            result[job.id] = Wait(position, reason, message)
    return result


def _dispatched_message(snap: _Snapshot, queue: str) -> str:
    if not snap.serving(queue):
        return f"handed to the pool, but no online worker serves GPU type {queue!r} any more"
    return "handed to the pool: it starts when a worker takes it"

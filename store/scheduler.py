"""Fair scheduling on a pool of hosts: jobs wait in the database until one host has room for all of a job.

A job is handed to the broker (*dispatched*) only when a host can take it at once, so the broker
never holds a backlog that one team could fill: the order in which waiting jobs start is decided
here, at each pass, and can still change when another team submits. Where a job runs is decided
here too: it is published to the queue of one host, which only that host reads.

Hosts and slots. Each online worker (``store.models.Worker``, kept by heartbeats) is a host with
``slots`` devices, numbered by the indices its heartbeat lists: GPU indices (``distill worker
--gpus 0,1,2,3``) or CPU slot numbers (``--slots N``). A host of type T runs the jobs asking for
T and those asking for ``any``; a host of type ``any`` runs only ``any`` jobs. A job needs
``max(1, resources.gpus)`` slots (``Job.gpus``; 0 means a CPU is enough, and still takes a slot)
on ONE host, all of them or none. It holds the indices recorded on its row (``Job.placed_on``,
``Job.devices``) from the moment it is dispatched through ``starting``, ``running`` and
``cancelling`` until it ends. (A started job without a placement, from before placements were
recorded, holds one slot of the host its lease names.)

Where. Of the hosts that serve a job's type, have enough free slots and are not held for another
job (below), the job goes to the one with the fewest free slots (the tightest fit, so that whole
hosts stay free for big jobs), an ``any`` job to a host of type ``any`` first; ties by host id.
It gets that host's lowest free indices.

Order. Waiting jobs are ``queued`` with no ``published_at``, or ``retrying`` (the reaper clears
``published_at`` and the placement). Within a team: higher priority first, then older first.
Between teams: the team with the fewest occupied slots (dispatched + started; an N-GPU job
counts N), then the one whose next job is the oldest. A pass takes the jobs in that order, one
at a time, counting each job it hands over at once:

1. a job that no online host could ever hold (none serves its type, or none has that many
   slots) is left out (``no_worker``), as is one asking for more slots than its team's
   ``max_running`` (``team_limit``): neither holds anything back;
2. ``max_running`` counts slots, not jobs: a team whose next job needs more slots than its
   limit leaves free waits, with its later jobs (``team_limit``), so that its own small jobs
   cannot keep its big one out;
3. a job that fits a host is handed over there;
4. a job that fits no host waits (``pool_busy``); if it needs more than one slot, one host is
   *held* for it: the host that will have its slots soonest, that is, of those that serve it,
   are big enough and are not held already, the one with the most free slots (ties by id).
   Later jobs of the pass do not get that host's free slots, so a stream of small jobs cannot
   starve a big one; they may still use every other host. A one-slot job needs no hold: any
   slot that frees fits it, and it comes first in order. The team's later jobs are still
   considered.

Holds are not stored: each pass makes them again, in the same order, so a big job keeps its host
while it stays ahead (that host's free slots only grow until the job fits). A job ahead of it in
the fair order (a team holding fewer slots) may still take a freed slot of that host first: that
is the fair share. ``Job.team`` None is a team of its own, without limits, as is a team name with
no ``Team`` row.

Positions. ``Wait.position`` is a job's 1-based place in its GPU-type queue (``Job.queue``):
first the jobs of that queue dispatched and not yet claimed, in the order they were handed over;
then its waiting jobs in the order the rule above would start them if slots opened one at a time
and nothing else changed. Teams at their ``max_running`` (from the start or as the simulation
fills them) go last, in the same fair order as if their limit were lifted: when one of their jobs
ends is not known. Jobs left out by rule 1 come after all of those. An ``any`` job may also take a
slot of a type-T host, so the jobs of queue T can be passed by ``any`` jobs that their position
does not count.

Reasons (``Wait.reason``, stable codes):

- ``dispatched``: handed to a host; it starts when that host's worker takes it from the broker.
- ``dispatching``: a host has room for it; the next dispatcher pass hands it over.
- ``no_worker``: no online host serves its GPU type, or none has as many slots as it asks for
  (the message names the type, or the count and the largest host).
- ``team_limit``: its team's jobs hold its ``max_running`` slots, or too many of them for this
  job, or it asks for more than that limit (the message names the counts).
- ``pool_busy``: every host that could run it is busy or held for jobs ahead; the message of a
  job a host is held for names that host.

Functions take a session and never commit; ``plan`` expects ``store.locks.DISPATCH`` held.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import String, and_, cast, func, or_, select
from sqlalchemy.orm import Session

from store.models import HELD, WAITING, Job, JobStatus, JobWrites, Team, Worker, as_utc

ANY = "any"
IS_WAITING = or_(
    and_(Job.status == JobStatus.QUEUED, Job.published_at.is_(None)), Job.status == JobStatus.RETRYING
)
IS_DISPATCHED = and_(Job.status == JobStatus.QUEUED, Job.published_at.is_not(None))

T = TypeVar("T")
TeamKey = str | None  # None: the jobs without a team, a team of their own
WaitingKey = tuple[int, int]  # ``_key_of``: how many jobs wait, and a hash of which, at which version
WaitingSum = tuple[int, int]  # ``waiting_sum``: equal sums, the same waiting jobs (its docstring)


def slots_needed(gpus: int) -> int:
    """The slots of one host a job holds: its GPUs, and one for a job that a CPU is enough for."""
    return max(1, gpus)


def slot_indices(slots: int, devices: Sequence[dict[str, Any]]) -> tuple[int, ...]:
    """A host's slot numbers: the indices its heartbeat lists, or 0..slots-1 if it lists none."""
    listed = tuple(d["index"] for d in devices if isinstance(d.get("index"), int))
    return listed if len(listed) == slots and len(set(listed)) == slots else tuple(range(slots))


@dataclass(frozen=True)
class Placement:
    """Where a job runs: a worker host (its id) and the device indices it holds there."""

    worker: str
    devices: tuple[int, ...]


@dataclass(frozen=True)
class Wait:
    """Why a job has not started yet, and its place in its GPU-type queue (module docstring)."""

    position: int | None  # None: not placed yet (``store.places.SCHEDULING``)
    reason: str
    message: str


@dataclass(frozen=True)
class _Waiting:
    id: str
    team: TeamKey
    queue: str
    priority: int
    created_at: datetime
    need: int  # slots

    @property
    def key(self) -> tuple[int, datetime, str]:
        """The order within a team: higher priority, then older (the id only breaks exact ties)."""
        return (-self.priority, self.created_at, self.id)


@dataclass
class _Host:
    id: str
    gpu_type: str
    indices: tuple[int, ...]
    free: set[int]

    def serves(self, queue: str) -> bool:
        return queue in (ANY, self.gpu_type)

    def take(self, need: int) -> tuple[int, ...]:
        devices = tuple(sorted(self.free)[:need])
        self.free -= set(devices)
        return devices


@dataclass(frozen=True)
class _Dispatched:
    id: str
    queue: str
    published_at: datetime
    placed_on: str | None


@dataclass
class Snapshot:
    hosts: dict[str, _Host]  # the online ones, by id
    occupied: Counter[TeamKey]  # slots held per team
    limits: dict[TeamKey, int]  # max_running (slots) of the teams that have one
    waiting: list[_Waiting]
    dispatched: list[_Dispatched]  # not yet claimed
    waiting_key: WaitingKey | None = None  # ``_key_of`` ``waiting``, if it was read with it
    _largest: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def serving(self, queue: str) -> list[_Host]:
        return [host for host in self.hosts.values() if host.serves(queue)]

    def largest(self, queue: str) -> int:
        """The most slots one online host that serves ``queue`` has (0: none serves it); the hosts
        and their slots do not change in a snapshot, so it is worked out once per queue."""
        if (known := self._largest.get(queue)) is None:
            known = self._largest[queue] = max((len(host.indices) for host in self.serving(queue)), default=0)
        return known

    def room(self, team: TeamKey, occupied: Counter[TeamKey]) -> float:
        """How many more slots the team may hold."""
        limit = self.limits.get(team)
        return float("inf") if limit is None else limit - occupied[team]

    def fingerprint(self) -> int:
        """Everything a pass (``plan``) and a ranking (``all_waits``) read from the snapshot,
        hashed: equal fingerprints, equal answers."""
        hosts = tuple(
            sorted((h.id, h.gpu_type, h.indices, tuple(sorted(h.free))) for h in self.hosts.values())
        )
        occupied = tuple(sorted(self.occupied.items(), key=str))
        limits = tuple(sorted(self.limits.items(), key=str))
        # the waiting jobs by their key when the snapshot has one: hashing 10,000 of them costs more
        waiting = self.waiting_key if self.waiting_key is not None else tuple(self.waiting)
        return hash((waiting, tuple(self.dispatched), hosts, occupied, limits))

    def runnable(self, job: _Waiting) -> bool:
        """Whether the job could ever start as things stand (rule 1 of the module docstring)."""
        limit = self.limits.get(job.team)
        return job.need <= self.largest(job.queue) and (limit is None or job.need <= limit)


def snapshot(session: Session) -> Snapshot:
    """The hosts, the slots held and the waiting jobs: four queries, light columns only."""
    hosts = {
        worker_id: _Host(worker_id, gpu_type, indices, set(indices))
        for worker_id, gpu_type, slots, devices in session.execute(
            select(Worker.id, Worker.gpu_type, Worker.slots, Worker.devices).where(Worker.status == "online")
        )
        for indices in [slot_indices(slots, devices or [])]
    }
    occupied: Counter[TeamKey] = Counter()
    dispatched: list[_Dispatched] = []
    rows = session.execute(
        select(
            Job.id, Job.team, Job.queue, Job.status, Job.gpus, Job.lease_owner, Job.published_at,
            Job.placed_on, Job.devices,
        ).where(or_(Job.status.in_(HELD), IS_DISPATCHED), Job.deleted_at.is_(None))
    ).all()  # fmt: skip
    for job_id, team, queue, status, gpus, lease_owner, published_at, placed_on, devices in rows:
        need = slots_needed(gpus)
        occupied[team] += need
        if (host := hosts.get(placed_on or "")) is not None:
            host.free -= set(devices or ())
        elif status in HELD and lease_owner and (host := hosts.get(lease_owner.rsplit(":", 1)[0])):
            host.take(1)  # a job started before placements were recorded
        if status == JobStatus.QUEUED and published_at is not None:
            dispatched.append(_Dispatched(job_id, queue, as_utc(published_at), placed_on))
    limits: dict[TeamKey, int] = {
        name: n for name, n in session.execute(select(Team.name, Team.max_running)) if n is not None
    }
    key, waiting = _waiting_jobs(session)
    return Snapshot(hosts, occupied, limits, list(waiting), dispatched, key)


_WAITING_ROWS = (IS_WAITING, Job.deleted_at.is_(None))
_PART = Job.id + "." + cast(Job.version, String)  # a waiting job as a ranking reads it: id.version
_HASH_SUM = func.sum(func.hashtextextended(_PART, 0))  # PostgreSQL's, summed as numeric: no overflow
RELOAD_ALL_AFTER = 2000
"""More new or changed waiting jobs than this since the last load: one statement reads them all
rather than a list of ids that long."""


@dataclass(frozen=True)
class _Loaded:
    key: WaitingKey  # ``_key_of`` these jobs, worked out from them
    by_part: dict[str, _Waiting]  # by ``id.version``
    jobs: tuple[_Waiting, ...]
    summed: WaitingSum | None = None  # ``waiting_sum`` of exactly these jobs, if the database gave it


_waiting_seen: dict[str, _Loaded] = {}
"""By database URL: the waiting jobs this process's last snapshot loaded."""


def _waiting_jobs(session: Session) -> tuple[WaitingKey, tuple[_Waiting, ...]]:
    """The waiting jobs, each read again only when it is new or changed since the last load.

    A pass runs every ``dispatch_interval_s`` whether or not anything changed, and after every
    burst of submissions; at 10,000 waiting jobs loading them all (rows fetched, objects made) was
    half of a pass's cost, 60-100 ms of CPU held in an API process, for a handful of new ones.
    One aggregate the database computes (``waiting_parts``) says which jobs wait, at which
    ``version``: every change to a job bumps it, so a job kept at the same version is the row as
    it is now. Only the others are read (by id); the kept ones that are no longer listed are
    dropped. The key kept is worked out from the jobs kept and read, not the one the aggregate
    gave: a job that changed or arrived in between is kept as read, and the next pass, seeing a
    different key, reads what differs again.

    A smaller read comes first (``waiting_sum``: two numbers, where ``waiting_parts`` sends every
    job's ``id.version``, 400 kB at 10,000 waiting jobs, split and hashed here with the GIL held):
    if it is what it was for the jobs loaded last, nothing else is read. That is every pass of a
    queue that did not change (on SQLite: of a database in which no job was written), so such a
    pass costs about the same at 10 and at 10,000 waiting jobs."""
    url = str(session.get_bind().engine.url)
    seen = _waiting_seen.get(url)
    if seen is not None and seen.summed is not None and waiting_sum(session) == seen.summed:
        return seen.key, seen.jobs
    count, parts, summed = waiting_parts(session)
    key = _key_of(count, parts)
    if seen is not None and seen.key == key:
        if summed != seen.summed:  # the same jobs: the sum is theirs
            _remember(_waiting_seen, url, replace(seen, summed=summed))
        return seen.key, seen.jobs
    columns = (Job.id, Job.version, Job.team, Job.queue, Job.priority, Job.created_at, Job.gpus)
    kept = seen.by_part if seen is not None else {}
    new = [part for part in parts if part not in kept]
    if seen is None or len(new) > RELOAD_ALL_AFTER:
        by_part: dict[str, _Waiting] = {}
        rows = session.execute(select(*columns).where(*_WAITING_ROWS)).all()
    else:
        by_part = {part: kept[part] for part in parts if part in kept}
        ids = [part.rpartition(".")[0] for part in new]
        rows = session.execute(select(*columns).where(Job.id.in_(ids), *_WAITING_ROWS)).all() if ids else []
    for i, v, t, q, p, c, g in rows:
        by_part[f"{i}.{v}"] = _Waiting(i, t, q, p, as_utc(c), slots_needed(g))
    loaded_key = _key_of(len(by_part), list(by_part))
    # the sum is the aggregate's: it stands for these jobs only if they are the ones it counted
    loaded = _Loaded(loaded_key, by_part, tuple(by_part.values()), summed if loaded_key == key else None)
    _remember(_waiting_seen, url, loaded)
    return loaded.key, loaded.jobs


def _remember(memo: dict[str, T], url: str, value: T) -> None:
    """``memo[url] = value``, keeping one entry per database this process dispatches for (tests
    make many: past 16 the memo starts again)."""
    if len(memo) >= 16:
        memo.clear()
    memo[url] = value


def waiting_sum(session: Session) -> WaitingSum | None:
    """Two numbers that are equal only for the same waiting jobs at the same versions, one row
    whatever the count; None if the database gives none.

    On PostgreSQL: how many jobs wait and the sum of a 64-bit hash of each one's ``id.version``
    (``hashtextextended``). A version only grows, so a set of jobs that changed does not come
    back, and two different sets with the same count and sum are as likely as a collision of
    ``_key_of``'s own 64-bit hash. On SQLite, which has no hash function: -1 and the number of
    writes to ``jobs`` so far (``store.models.JobWrites``, kept by triggers), which moves with
    every change to any job; None for a database made without its migration."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        count, total = session.execute(select(func.count(), _HASH_SUM).where(*_WAITING_ROWS)).one()
        return int(count), int(total or 0)
    if dialect == "sqlite":
        writes = session.scalar(select(_WRITES))
        return None if writes is None else (-1, int(writes))
    return None


_WRITES = select(JobWrites.n).where(JobWrites.id == 1).scalar_subquery()


def waiting_parts(session: Session) -> tuple[int, list[str], WaitingSum | None]:
    """Which jobs wait, as a ranking reads them: their count and their ``id.version``, in any
    order, in one aggregate (one row, whatever the count); with their ``waiting_sum`` from the
    same statement (so it stands for these very parts)."""
    if session.get_bind().dialect.name == "postgresql":
        count, text, total = session.execute(
            select(func.count(), func.string_agg(_PART, ","), _HASH_SUM).where(*_WAITING_ROWS)
        ).one()
        return int(count), text.split(",") if text else [], (int(count), int(total or 0))
    count, text, writes = session.execute(
        select(func.count(), func.group_concat(_PART, ","), _WRITES).where(*_WAITING_ROWS)
    ).one()
    return int(count), text.split(",") if text else [], None if writes is None else (-1, int(writes))


def _key_of(count: int, parts: list[str]) -> WaitingKey:
    """The key of ``count`` waiting jobs whose ``id.version`` are ``parts``, in any order."""
    return count, hash(frozenset(parts))


def _by_team(jobs: Iterable[_Waiting]) -> dict[TeamKey, deque[_Waiting]]:
    teams: dict[TeamKey, list[_Waiting]] = defaultdict(list)
    for job in jobs:
        teams[job.team].append(job)
    return {team: deque(sorted(js, key=lambda j: j.key)) for team, js in teams.items()}


def _fair_key(occupied: Counter[TeamKey], head: _Waiting) -> tuple[int, datetime, str]:
    """The order between teams: fewest occupied slots, then the oldest candidate job."""
    return (occupied[head.team], head.created_at, head.id)


@dataclass
class _Pass:
    """What one pass would do: the jobs it hands over and where, the hosts it holds, who waits
    for their team's limit, and the slots each team would then hold."""

    placed: list[tuple[_Waiting, Placement]] = field(default_factory=list)
    held: dict[str, str] = field(default_factory=dict)  # job id -> the host held for it
    limited: set[str] = field(default_factory=set)
    occupied: Counter[TeamKey] = field(default_factory=Counter)


def _fit(hosts: Iterable[_Host], job: _Waiting, held: dict[str, str]) -> _Host | None:
    """The host a job goes to now, if any has room (module docstring, "Where")."""
    fits = [
        h
        for h in hosts
        if h.serves(job.queue) and len(h.free) >= job.need and held.get(h.id, job.id) == job.id
    ]
    return min(fits, key=lambda h: (h.gpu_type != job.queue, len(h.free), h.id), default=None)


def _hold(hosts: Iterable[_Host], job: _Waiting, held: dict[str, str]) -> _Host | None:
    """The host to keep for a job that fits none: the one that will have its slots soonest."""
    able = [h for h in hosts if h.serves(job.queue) and len(h.indices) >= job.need and h.id not in held]
    return min(able, key=lambda h: (-len(h.free), h.id), default=None)


def _select(snap: Snapshot, limit: int | None = None) -> _Pass:
    """One pass in the fair order (module docstring): at most ``limit`` jobs handed over."""
    hosts = [_Host(h.id, h.gpu_type, h.indices, set(h.free)) for h in snap.hosts.values()]
    out = _Pass(occupied=Counter(snap.occupied))
    host_held: dict[str, str] = {}  # host id -> the job it is held for
    teams = _by_team(job for job in snap.waiting if snap.runnable(job))
    heap = [(_fair_key(out.occupied, jobs[0]), team) for team, jobs in teams.items()]
    heapq.heapify(heap)  # keys end with a job id: never equal, teams never compared
    while heap and (limit is None or len(out.placed) < limit):
        _key, team = heapq.heappop(heap)
        jobs = teams[team]
        if snap.room(team, out.occupied) < jobs[0].need:
            out.limited |= {job.id for job in jobs}  # the team waits behind its next job
            continue
        job = jobs.popleft()
        if (host := _fit(hosts, job, host_held)) is not None:
            out.placed.append((job, Placement(host.id, host.take(job.need))))
            out.occupied[team] += job.need
        elif job.need > 1 and (keep := _hold(hosts, job, host_held)) is not None:
            host_held[keep.id] = job.id
            out.held[job.id] = keep.id
        if jobs:
            heapq.heappush(heap, (_fair_key(out.occupied, jobs[0]), team))
    return out


def _ranks(snap: Snapshot, jobs: Sequence[_Waiting]) -> dict[str, int]:
    """1-based start order of the waiting jobs of one queue, slots opening one at a time."""
    occupied = Counter(snap.occupied)
    teams = _by_team(job for job in jobs if snap.runnable(job))
    order: list[str] = []
    capped = [team for team in teams if snap.room(team, occupied) < teams[team][0].need]  # they go last

    def fill(candidates: list[TeamKey], lifted: bool) -> None:
        heap = [(_fair_key(occupied, teams[team][0]), team) for team in candidates]
        heapq.heapify(heap)  # keys end with a job id: never equal, teams never compared
        while heap:
            _key, team = heapq.heappop(heap)
            job = teams[team].popleft()
            order.append(job.id)
            occupied[team] += job.need
            if not teams[team]:
                continue
            if not lifted and snap.room(team, occupied) < teams[team][0].need:
                capped.append(team)
            else:
                heapq.heappush(heap, (_fair_key(occupied, teams[team][0]), team))

    fill([team for team in teams if team not in capped], lifted=False)
    fill(list(capped), lifted=True)  # as if their limits were lifted
    order += [job.id for job in sorted(jobs, key=lambda j: j.key) if not snap.runnable(job)]
    return {job_id: place for place, job_id in enumerate(order, start=1)}


_idle: dict[str, int] = {}
"""By database URL: the fingerprint of the last snapshot from which ``plan`` handed nothing over.
A pass at rest (every ``dispatch_interval_s``) finds the same again: with 10,000 waiting jobs,
going through them to find that was 5-30 ms of CPU in an API process every two seconds, and
showed in the p99 of the requests beside it."""


def plan(
    session: Session, limit: int | None = None, snap: Snapshot | None = None
) -> list[tuple[Job, Placement]]:
    """The waiting jobs to hand to the pool now, in order (at most ``limit``), each with its host
    and devices.

    Call it with ``store.locks.DISPATCH`` held, and mark each job published with its placement
    (``domain.lifecycle.mark_published``) in the same transaction: a second pass then sees those
    slots taken. ``snap``: a ``snapshot`` taken under the same lock, if the caller has one.
    """
    snap = snap or snapshot(session)
    url, seen = str(session.get_bind().engine.url), snap.fingerprint()
    if _idle.get(url) == seen:
        return []  # as the last pass that handed nothing over found things: nothing again
    chosen = _select(snap, limit).placed
    if not chosen:
        _remember(_idle, url, seen)
        return []
    _idle.pop(url, None)
    # only the ones still waiting: a cancel does not take the dispatch lock
    ids = [job.id for job, _placement in chosen]
    rows = {job.id: job for job in session.scalars(select(Job).where(Job.id.in_(ids), IS_WAITING))}
    return [(rows[job.id], placement) for job, placement in chosen if job.id in rows]


class JobKey(Protocol):
    """What ``waits`` reads of a job: a row or a ``select(Job.id, Job.status, ...)`` tuple."""

    @property
    def id(self) -> str: ...

    @property
    def status(self) -> JobStatus: ...


def waits(session: Session, jobs: Sequence[JobKey]) -> dict[str, Wait]:
    """Position and reason for each job given that is waiting or dispatched and unclaimed, ranked
    now (the API reads them from the last pass instead: ``store.places``)."""
    if not any(job.status in WAITING for job in jobs):
        return {}  # a page of started or finished jobs costs no query
    wanted = {job.id for job in jobs}
    return {job_id: wait for job_id, wait in all_waits(snapshot(session)).items() if job_id in wanted}


def all_waits(snap: Snapshot) -> dict[str, Wait]:
    """Position and reason of every waiting job, and every dispatched one not yet claimed."""
    result: dict[str, Wait] = {}
    handed: dict[str, list[_Dispatched]] = defaultdict(list)
    for sent in snap.dispatched:
        handed[sent.queue].append(sent)
    for entries in handed.values():
        for place, sent in enumerate(sorted(entries, key=lambda d: (d.published_at, d.id)), start=1):
            result[sent.id] = Wait(place, "dispatched", _dispatched_message(snap, sent))
    outcome = _select(snap)
    next_up = {job.id for job, _placement in outcome.placed}
    queues: dict[str, list[_Waiting]] = defaultdict(list)
    for job in snap.waiting:
        queues[job.queue].append(job)
    for queue, members in queues.items():
        ranks = _ranks(snap, members)
        ahead = len(handed[queue])
        for job in members:
            position = ahead + ranks[job.id]
            result[job.id] = Wait(position, *_reason(snap, outcome, job, next_up, position))
    return result


def _reason(
    snap: Snapshot, outcome: _Pass, job: _Waiting, next_up: set[str], position: int
) -> tuple[str, str]:
    """(reason, message) of a waiting job, from the pass ``plan`` would make now."""
    queue, need = job.queue, job.need
    largest, limit = snap.largest(queue), snap.limits.get(job.team)
    if largest == 0:
        return (
            "no_worker",
            "no worker is online" if queue == ANY else f"no online worker serves GPU type {queue!r}",
        )
    if largest < need:
        where = "" if queue == ANY else f" of GPU type {queue!r}"
        return "no_worker", f"asks for {need} GPUs on one host; the largest online host{where} has {largest}"
    if limit is not None and need > limit:
        return "team_limit", (
            f"asks for {need} GPUs, more than team {job.team!r} may hold at once (max_running={limit} "
            "GPU slots): it starts only if that limit is raised"
        )
    if job.id in next_up:
        return "dispatching", "a host has room for it: the next dispatcher pass hands it over"
    if job.id in outcome.limited:
        return "team_limit", (
            f"team {job.team!r} holds {outcome.occupied[job.team]} GPU slot(s), its limit (max_running="
            f"{limit}); this job needs {need}: it starts when enough of them end"
        )
    if (host := outcome.held.get(job.id)) is not None:
        return "pool_busy", (
            f"no host has {need} free slots; host {host} is held for it: it starts there once "
            f"{need} of its slots are free, and no later job takes them"
        )
    needs = "" if need == 1 else f" for {need} slots on one host"
    return "pool_busy", (
        f"all {len(snap.serving(queue))} worker(s) that serve {queue!r} are busy or promised to jobs "
        f"ahead{needs}; {position - 1} job(s) ahead in this queue"
    )


def _dispatched_message(snap: Snapshot, sent: _Dispatched) -> str:
    if sent.placed_on is None:  # handed over before placements were recorded
        return "handed to the pool without a host: it goes back to the queue"
    if sent.placed_on not in snap.hosts:
        return f"handed to {sent.placed_on}, which is not online: it goes back to the queue"
    return f"handed to {sent.placed_on}: it starts when that host's worker takes it"

"""The Celery task: claim a job, run the engine with a database sink, record how it ended.

A delivery carries only a job id. The claim is a conditional update, so a duplicate delivery (or
a late one, after the job finished, or a stale one for a job now placed on another host) finds
nothing to claim and does nothing. The job's row says which of the host's devices it was placed
on; its engine process sees exactly those GPUs (``CUDA_VISIBLE_DEVICES``). The job's working
directory persists across attempts: a retried job resumes from its last epoch checkpoint.
The engine (and with it torch) runs in a process of its own that the task starts and confines
(``worker.engine_process``, ``worker.confine``): this process, which holds the database session
and the settings, never imports torch nor runs a job's models.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import OperationalError

from core.errors import CancelledError, DataMissingError, DistilleryError, JobTimeoutError, SpecError
from core.spec import JobSpec, parse_spec
from domain.lifecycle import Ending, claim, end, succeed
from domain.sweeps import TrialPruning
from store.artifacts import ArtifactStore, open_store
from store.db import session_scope
from store.models import JobStatus
from store.settings import Settings, get_settings
from worker.celery_app import TASK_NAME
from worker.engine_process import run_engine_process
from worker.lease import Lease, LeaseRenewer, until_lease_ends
from worker.redact import redact
from worker.sink import DbSink
from worker.slots import Slots
from worker.stages import KeptStages

log = logging.getLogger(__name__)

CLAIM_RETRY_S = 10  # the database was unreachable at claim time: deliver the id again this much later


class DatabaseUnavailable(Exception):
    """The claim could not be attempted; the job is untouched and its message must not be lost."""


@shared_task(name=TASK_NAME, bind=True, max_retries=None)
def run_job(self: Task, job_id: str) -> str:
    """Returns how the delivery ended (a job status, or ``skipped``), for the worker's log."""
    settings = getattr(self.app, "settings", None) or get_settings()
    slots = getattr(self.app, "slots", None) or Slots.cpu(1)
    server = getattr(self.app, "engine_server", None)  # the socket of the host's engine server
    # the child's pid: a restarted or second worker on the same host is another lease owner
    worker_id = f"{self.request.hostname or socket.gethostname()}:{os.getpid()}"
    try:
        return Attempt(settings, job_id, worker_id, slots, engine_server=server).run()
    except DatabaseUnavailable as e:
        # the job was published already, so the dispatcher would not send it again: retry here
        log.warning("job %s: database unavailable (%s); retrying in %ss", job_id, e, CLAIM_RETRY_S)
        raise self.retry(exc=e, countdown=CLAIM_RETRY_S) from e


class Attempt:
    """One attempt at one job by one worker process."""

    def __init__(
        self,
        settings: Settings,
        job_id: str,
        worker_id: str,
        slots: Slots | None = None,
        *,
        engine_server: Path | None = None,
    ) -> None:
        self.settings, self.job_id, self.worker_id = settings, job_id, worker_id
        self.engine_server = engine_server
        self.slots = slots or Slots.cpu(1)
        self.devices: list[int] | None = None  # the slots the scheduler placed the job on
        self.db_url = settings.db_url
        self.out_dir = settings.work_path / job_id
        self.sink: DbSink | None = None
        # made before the claim sets the lease, so its local deadline errs early
        self.lease = Lease(settings.lease_s)

    def run(self) -> str:
        spec_data = self._claim()
        if spec_data is None:
            log.info("job %s: nothing to claim (finished, cancelled or taken)", self.job_id)
            return "skipped"
        try:
            spec = parse_spec(spec_data)  # the API validated it; the engine's version may differ
        except SpecError as e:
            return self._fail(e.type, str(e))
        renewer = LeaseRenewer(
            self.db_url,
            self.job_id,
            self.worker_id,
            lease_s=self.settings.lease_s,
            cancel_grace_s=self.settings.cancel_grace_s,
            lease=self.lease,
        ).start()
        try:
            return self._execute(spec)
        finally:
            renewer.stop()

    def _claim(self) -> dict[str, Any] | None:
        try:
            with session_scope(self.db_url) as session:
                job = claim(session, self.job_id, self.worker_id, self.settings.lease_s)
                spec = None if job is None else dict(job.spec)
                attempt = None if job is None else job.attempt
                self.devices = None if job is None or job.devices is None else list(job.devices)
        except OperationalError as e:  # connection refused, database locked: not the job's fault
            raise DatabaseUnavailable(str(e).splitlines()[0]) from e
        if spec is not None:
            log.info(
                "job %s: attempt %s on %s, devices %s", self.job_id, attempt, self.worker_id, self.devices
            )
        return spec

    def _execute(self, spec: JobSpec) -> str:
        sink = self.sink = DbSink(self.db_url, self.job_id, self.worker_id, lease=self.lease)
        stages = KeptStages(
            self.db_url,
            self._store(),
            self.job_id,
            spec,
            self.out_dir,
            actor=self.worker_id,
            log_line=sink.log,
        )
        sink.on_stage = stages.keep
        sink.pruning = self._pruning()
        try:
            self._restore(stages)
            report = run_engine_process(
                spec.model_dump(mode="json"),
                self.out_dir,
                data_root=self.settings.data_path,
                device=self.settings.device,
                sink=sink,
                sandbox=self.settings.sandbox,
                devices=self.slots.visible(self.devices),  # exactly its GPUs; None on a CPU host
                server=self.engine_server,
            )
            return self._succeed(report, sink)
        except CancelledError as e:
            if sink.lease_lost:
                log.warning("job %s: stopped, this worker lost its lease", self.job_id)
                return "lost"
            pruned = sink.prune_reason is not None and not sink.cancel_seen
            if pruned and self._end(Ending.pruned(sink.prune_reason or "")) == JobStatus.PRUNED:
                return JobStatus.PRUNED.value
            return self._end(Ending.cancelled(str(e), requested=False))
        except DistilleryError as e:
            # Terminal, never retried: out_of_memory too (the next attempt would not fit either),
            # whether the engine caught it or the kernel's OOM killer ended its process.
            return self._fail(e.type, str(e))
        except SoftTimeLimitExceeded:
            limit = self.settings.task_time_limit_s
            return self._fail(JobTimeoutError.type, f"the attempt ran past its time limit ({limit}s)")
        except Exception as e:
            log.exception("job %s: unexpected error", self.job_id)
            return self._fail(DistilleryError.type, f"{type(e).__name__}: {e}")

    def _pruning(self) -> TrialPruning | None:
        """A sweep's trial reports its epochs to its pruner; a lookup that fails only loses that."""
        try:
            return TrialPruning.for_job(self.db_url, self.job_id)
        except Exception:
            log.warning(
                "job %s: its sweep's pruner not reached; it runs unpruned", self.job_id, exc_info=True
            )
            return None

    def _store(self) -> ArtifactStore:
        return open_store(self.settings.artifacts_location, s3_endpoint=self.settings.s3_endpoint)

    def _restore(self, stages: KeptStages) -> None:
        """The team's kept teachers and baselines, in place before the engine starts."""
        try:
            stages.restore()
        except DataMissingError:
            raise  # teacher.from_job names a teacher that is gone: the job cannot run as asked
        except Exception:  # a lookup that failed only costs training the stage again
            log.warning("job %s: kept stages not looked up", self.job_id, exc_info=True)

    # ---------------------------------------------------------------- endings

    def _succeed(self, report: dict[str, Any], sink: DbSink) -> str:
        rows = self._upload(report.get("artifacts", {}))
        progress = {**(sink.last_progress or {}), "fraction": 1.0, "eta_s": 0.0}
        if not sink.drain():  # every metric and log line first: a succeeded job has them all
            return self._gave_up(JobStatus.SUCCEEDED)

        def write() -> bool:
            with session_scope(self.db_url) as session:
                return succeed(
                    session,
                    self.job_id,
                    self.worker_id,
                    report=_json_safe(report),
                    progress=progress,
                    artifacts=rows,
                )

        # a database outage as the run ends: retry while the lease lasts, the result is worth it
        done, moved = until_lease_ends(self.lease, self.job_id, write)
        if not done:
            return self._gave_up(JobStatus.SUCCEEDED)
        if moved:
            log.info("job %s: succeeded with %d artifact(s)", self.job_id, len(rows))
            return JobStatus.SUCCEEDED.value
        # asked to cancel while the last steps ran, or the lease was lost meanwhile
        return self._end(Ending.cancelled("cancelled as the run finished"))

    def _upload(self, artifacts: dict[str, str]) -> list[dict[str, Any]]:
        """Stores the run's files; the values of their ``Artifact`` rows (but the job's id)."""
        store = self._store()
        root = self.out_dir.resolve()
        names = [Path(rel).name for rel in artifacts.values()]
        rows = []
        for name, rel in artifacts.items():
            path = (self.out_dir / rel).resolve()
            if not path.is_file() or not path.is_relative_to(root):
                log.warning("job %s: artifact %s (%s) is missing", self.job_id, name, rel)
                continue
            # two stages both write model.safetensors: keep the stage in those names
            filename = path.name if names.count(path.name) == 1 else "-".join(Path(rel).parts[-2:])
            stored = store.put(f"{self.job_id}/{filename}", path)
            rows.append(
                {
                    "name": name,
                    "filename": filename,
                    "size": stored.size,
                    "sha256": stored.sha256,
                    "location": stored.location,
                }
            )
        return rows

    def _fail(self, error_type: str, message: str) -> str:
        log.warning("job %s: failed (%s): %s", self.job_id, error_type, message)
        moved = self._end(Ending.failed(error_type, message))
        if moved != JobStatus.FAILED:  # a cancel request came first: the user's intent wins
            return self._end(Ending.cancelled(message))
        return moved

    def _end(self, ending: Ending) -> str:
        """Move the job to a terminal state if this worker still holds it; returns the outcome."""
        # the team sees no server paths
        ending = replace(ending, message=redact(ending.message, self.settings, self.out_dir))
        target = ending.target.value
        # the sink saves progress at intervals: record where the run really stopped
        last: dict[str, Any] = {}
        if self.sink is not None and self.sink.last_progress:
            last["progress"] = self.sink.last_progress
        if self.sink is not None and not self.sink.drain():
            return self._gave_up(target)

        def write() -> bool:
            with session_scope(self.db_url) as session:
                return end(session, self.job_id, self.worker_id, ending, **last)

        done, moved = until_lease_ends(self.lease, self.job_id, write)
        if not done:
            return self._gave_up(target)
        if not moved:
            log.warning("job %s: not moved to %s (no longer held by this worker)", self.job_id, target)
            return "lost"
        return target

    def _gave_up(self, target: str) -> str:
        log.error("job %s: not moved to %s: the database stayed away past the lease", self.job_id, target)
        return "lost"


def _json_safe(value: Any) -> Any:
    """NaN and infinities are not JSON (PostgreSQL refuses them): store them as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value

"""Teachers and baselines trained once per team: the worker's side.

Before a run, every stage of the job that its team already keeps (``core.stagekeys``: same
teacher, data, seed and engine; or ``teacher.from_job``) is fetched from the artifact store into
the job's ``stages/<stage>/``, where the engine finds it finished and skips it; a job event
names the job that trained it. When the engine reports a stage it trained (``Sink.stage_done``),
its weights and result are stored and kept for the team. Another team never finds them: the
lookup is by (team, key). Keeping is best effort: a failure is logged and the job goes on.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import DataMissingError
from core.spec import JobSpec
from core.stagekeys import shared_stages, teacher_stage
from store import stages as kept
from store.artifacts import ArtifactStore, ChecksumError, iter_verified
from store.db import session_scope
from store.jobs import add_event
from store.models import StageArtifact

log = logging.getLogger(__name__)

FILES = ("model.safetensors", "result.json")  # what ``core.runner`` writes when a stage is done


class KeptStages:
    def __init__(
        self,
        db_url: str,
        store: ArtifactStore,
        job_id: str,
        spec: JobSpec,
        out_dir: Path,
        *,
        actor: str,
        log_line: Callable[[str], object] = lambda _line: None,
    ) -> None:
        self.db_url, self.store, self.job_id, self.spec = db_url, store, job_id, spec
        self.stages_dir = out_dir / "stages"
        self.actor, self.log_line = actor, log_line
        self.keys = shared_stages(spec)
        self.team: str | None = None  # read with the first lookup: a stage is never kept under a guess

    def restore(self) -> list[str]:
        """Put the team's kept stages in place; the stages restored. A teacher asked for by
        ``from_job`` that is not kept (any more) is a ``data_missing`` error."""
        wanted = {teacher_stage(i): t.from_job for i, t in enumerate(self.spec.all_teachers) if t.from_job}
        restored = []
        with session_scope(self.db_url) as session:
            team = self.team = kept.team_of(session, self.job_id)
            for stage, key in self.keys.items():
                if self._done(stage):
                    continue
                source = wanted.get(stage)
                row = kept.used_by(session, source, "teacher") if source else kept.find(session, team, key)
                if row is None or row.team != team:
                    if source:
                        raise DataMissingError(
                            f"teacher.from_job: job {source} has no kept teacher (it was deleted, or "
                            "it did not train one)"
                        )
                    continue
                try:
                    self._fetch(row, stage)
                except (
                    OSError,
                    ValueError,
                    ChecksumError,
                ) as e:  # the files went (a deletion raced this run)
                    if source:
                        raise DataMissingError(
                            f"teacher.from_job: the teacher of job {source} is gone"
                        ) from e
                    log.warning("job %s: kept stage %s unreadable (%s); training it", self.job_id, row.id, e)
                    continue
                kept.use(session, row.id, self.job_id)
                add_event(
                    session,
                    self.job_id,
                    "stage",
                    f"stage {stage}: reused from job {row.job_id} (kept since "
                    f"{row.created_at:%Y-%m-%d %H:%M} UTC), not trained again",
                    actor=self.actor,
                )
                restored.append(stage)
        return restored

    def keep(self, stage: str) -> None:
        """Called when the engine finished training ``stage``: store it for the team's next jobs."""
        key = self.keys.get(stage)
        if key is None:
            return
        try:
            with session_scope(self.db_url) as session:
                team = self.team = self.team if self.team is not None else kept.team_of(session, self.job_id)
                if kept.find(session, team, key) is not None:
                    kept.keep(session, team=team, key=key, stage=stage, job_id=self.job_id, files={})
                    return
            files: dict[str, dict[str, Any]] = {}
            for name in FILES:
                stored = self.store.put(
                    f"stages/{self.job_id}-{key[:16]}/{name}", self.stages_dir / stage / name
                )
                files[name] = {"location": stored.location, "size": stored.size, "sha256": stored.sha256}
            with session_scope(self.db_url) as session:
                _row, new = kept.keep(
                    session, team=team, key=key, stage=stage, job_id=self.job_id, files=files
                )
            if not new:  # trained twice at once by two jobs: the first one kept stays
                for entry in files.values():
                    self.store.delete(entry["location"])
            self.log_line(f"stage {stage}: kept for the team's next jobs with the same {stage}")
        except Exception:
            log.warning("job %s: stage %s not kept", self.job_id, stage, exc_info=True)

    def _done(self, stage: str) -> bool:
        return all((self.stages_dir / stage / name).exists() for name in FILES)

    def _fetch(self, row: StageArtifact, stage: str) -> None:
        target = self.stages_dir / stage
        target.mkdir(parents=True, exist_ok=True)
        # result.json last: it is the engine's mark of a finished stage
        for name in FILES:
            entry = row.files[name]
            fd, tmp = tempfile.mkstemp(dir=target, prefix=".fetch.")
            try:
                with os.fdopen(fd, "wb") as out:
                    for chunk in iter_verified(self.store.open(entry["location"]), entry["sha256"]):
                        out.write(chunk)
                os.replace(tmp, target / name)
            finally:
                Path(tmp).unlink(missing_ok=True)

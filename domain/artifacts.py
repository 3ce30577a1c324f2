"""A job's artifacts: which the caller may see, and their files read back against their checksum."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from sqlalchemy.orm import Session

from core.errors import GoneError, NotFoundError
from store.artifacts import ArtifactStore, ChecksumError, artifacts_of, iter_verified
from store.identity import Caller
from store.models import Artifact, Job

log = logging.getLogger(__name__)


def of_job(session: Session, job_id: str) -> list[Artifact]:
    """A job's artifacts by name (the caller's access to the job is checked by whoever named it)."""
    return artifacts_of(session, job_id)


def get_visible(session: Session, caller: Caller, artifact_id: str) -> Artifact:
    """An artifact of a job the caller may see: another team's, or a deleted job's, is as
    missing as one that does not exist (``NotFoundError``)."""
    artifact = session.get(Artifact, artifact_id)
    job = session.get(Job, artifact.job_id) if artifact is not None else None
    if artifact is None or job is None or job.deleted_at is not None or not caller.sees(job.team):
        raise NotFoundError("artifact", artifact_id)
    return artifact


def read(store: ArtifactStore, artifact: Artifact) -> Iterator[bytes]:
    """The file's chunks, checked while they are read.

    Opened now, so a file gone from the store is ``GoneError`` before anything is sent. The
    last chunk is held back until the whole file matched its checksum: a corrupt file ends
    short of its size, which every HTTP client reports as a failed transfer, never as bad bytes.
    """
    try:
        stream = store.open(artifact.location)
    except (FileNotFoundError, ValueError):
        log.error("artifact %s: file %s is missing from the store", artifact.id, artifact.location)
        raise GoneError("the artifact's file is no longer in the store") from None
    return held_back(iter_verified(stream, artifact.sha256), artifact.id)


def held_back(chunks: Iterator[bytes], artifact_id: str) -> Iterator[bytes]:
    """Send each chunk only once the next one is read.

    ``iter_verified`` raises after the last chunk when the file does not match its checksum;
    holding that chunk back means a corrupt file reaches the client short of its
    ``Content-Length``.
    """
    previous: bytes | None = None
    try:
        for chunk in chunks:
            if previous is not None:
                yield previous
            previous = chunk
    except ChecksumError:
        log.error("artifact %s does not match its checksum; download aborted", artifact_id)
        raise
    if previous is not None:
        yield previous

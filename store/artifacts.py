"""The artifact store: students, reports and weights of finished jobs, with checksums.

Local filesystem by default (``file:`` locations under one directory); S3-compatible storage
when ``DISTILLERY_ARTIFACTS_URL`` is ``s3://bucket/prefix`` (boto3, optional dependency;
``DISTILLERY_S3_ENDPOINT`` for MinIO, Ceph and the like). Writes
and reads stream in chunks; the SHA-256 is computed while writing, recorded, and checked again
when a file is read back whole. The rows recording them (``store.models.Artifact``) are read
here too.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.models import Artifact

CHUNK = 1 << 20


@dataclass(frozen=True)
class Stored:
    location: str
    size: int
    sha256: str


class ChecksumError(Exception):
    """A stored file no longer matches the checksum recorded when it was written."""


class ArtifactStore(Protocol):
    def put(self, key: str, source: Path) -> Stored: ...

    def open(self, location: str) -> IO[bytes]: ...

    def delete(self, location: str) -> None: ...


def _hashing_copy(src: IO[bytes], dst: IO[bytes]) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    while chunk := src.read(CHUNK):
        digest.update(chunk)
        dst.write(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def iter_verified(stream: IO[bytes], expected_sha256: str) -> Iterator[bytes]:
    """Yield a stored file's chunks; raise ChecksumError at the end if it does not match."""
    digest = hashlib.sha256()
    with stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
            yield chunk
    if digest.hexdigest() != expected_sha256:
        raise ChecksumError(f"checksum mismatch: expected {expected_sha256}, read {digest.hexdigest()}")


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()

    def _path(self, location: str) -> Path:
        if not location.startswith("file:"):
            raise ValueError(f"not a local artifact location: {location!r}")
        path = (self.root / location.removeprefix("file:")).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"artifact location escapes the store: {location!r}")
        return path

    def put(self, key: str, source: Path) -> Stored:
        target = self._path(f"file:{key}")
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".upload.")
        try:
            with source.open("rb") as src, os.fdopen(fd, "wb") as dst:
                size, digest = _hashing_copy(src, dst)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return Stored(f"file:{key}", size, digest)

    def open(self, location: str) -> IO[bytes]:
        return self._path(location).open("rb")

    def delete(self, location: str) -> None:
        self._path(location).unlink(missing_ok=True)


class S3Store:
    """S3 or any S3-compatible service (MinIO, Ceph); credentials from the usual AWS variables."""

    def __init__(self, url: str, client: Any | None = None, *, endpoint: str | None = None) -> None:
        import boto3  # optional: only deployments that store artifacts in S3 install it

        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.client = client or boto3.client("s3", endpoint_url=endpoint)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, source: Path) -> Stored:
        digest = sha256_of(source)
        with source.open("rb") as f:  # upload_fileobj streams in parts
            self.client.upload_fileobj(
                f, self.bucket, self._key(key), ExtraArgs={"Metadata": {"sha256": digest}}
            )
        return Stored(f"s3://{self.bucket}/{self._key(key)}", source.stat().st_size, digest)

    def open(self, location: str) -> IO[bytes]:
        bucket, _, key = location.removeprefix("s3://").partition("/")
        body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
        return body

    def delete(self, location: str) -> None:
        bucket, _, key = location.removeprefix("s3://").partition("/")
        self.client.delete_object(Bucket=bucket, Key=key)


def open_store(url_or_dir: str | Path, *, s3_endpoint: str | None = None) -> ArtifactStore:
    """The store at ``settings.artifacts_location``; ``s3_endpoint`` (``settings.s3_endpoint``)
    names an S3-compatible service other than AWS's."""
    text = str(url_or_dir)
    if text.startswith("s3://"):
        return S3Store(text, endpoint=s3_endpoint)
    return LocalStore(Path(text.removeprefix("file://")))


def artifacts_of(session: Session, job_id: str) -> list[Artifact]:
    """A job's artifact rows, by name."""
    return list(session.scalars(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.name)))

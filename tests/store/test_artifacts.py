"""The artifact store: streamed, checksummed writes and reads, on disk and on S3 (moto's fake S3)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from store.artifacts import ChecksumError, LocalStore, S3Store, iter_verified, open_store
from store.settings import Settings


def payload(tmp_path: Path, size: int = 3 * (1 << 20) + 17) -> tuple[Path, bytes]:
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    path = tmp_path / "student.pt"
    path.write_bytes(data)
    return path, data


def test_local_round_trip_with_checksum(tmp_path: Path) -> None:
    source, data = payload(tmp_path)
    store = LocalStore(tmp_path / "artifacts")
    stored = store.put("job1/student.pt", source)
    assert stored.location == "file:job1/student.pt" and stored.size == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert b"".join(iter_verified(store.open(stored.location), stored.sha256)) == data
    store.delete(stored.location)
    assert not (tmp_path / "artifacts" / "job1" / "student.pt").exists()


def test_a_corrupted_file_fails_its_checksum(tmp_path: Path) -> None:
    source, _ = payload(tmp_path, 1000)
    store = LocalStore(tmp_path / "artifacts")
    stored = store.put("job1/a.bin", source)
    (tmp_path / "artifacts" / "job1" / "a.bin").write_bytes(b"tampered")
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        b"".join(iter_verified(store.open(stored.location), stored.sha256))


def test_locations_cannot_escape_the_store(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "artifacts")
    with pytest.raises(ValueError, match="escapes"):
        store.open("file:../../etc/passwd")
    with pytest.raises(ValueError, match="not a local"):
        store.open("s3://bucket/key")


def test_s3_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    moto = pytest.importorskip("moto")
    import boto3

    for key, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    source, data = payload(tmp_path)
    with moto.mock_aws():
        boto3.client("s3").create_bucket(Bucket="distillery")
        store = open_store("s3://distillery/prod")
        assert isinstance(store, S3Store)
        stored = store.put("job1/student.pt", source)
        assert stored.location == "s3://distillery/prod/job1/student.pt"
        assert stored.sha256 == hashlib.sha256(data).hexdigest() and stored.size == len(data)
        assert b"".join(iter_verified(store.open(stored.location), stored.sha256)) == data
        store.delete(stored.location)
        assert boto3.client("s3").list_objects_v2(Bucket="distillery").get("KeyCount") == 0


def test_the_s3_endpoint_comes_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """``DISTILLERY_S3_ENDPOINT`` (MinIO, Ceph) reaches the client through ``Settings``, not a
    read of the environment of its own."""
    pytest.importorskip("boto3")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("DISTILLERY_S3_ENDPOINT", "http://minio.internal:9000")
    settings = Settings(_env_file=None, artifacts_url="s3://distillery/prod")
    store = open_store(settings.artifacts_location, s3_endpoint=settings.s3_endpoint)
    assert isinstance(store, S3Store) and store.client.meta.endpoint_url == "http://minio.internal:9000"
    assert open_store("s3://distillery/prod").client.meta.endpoint_url.startswith("https://s3.")  # type: ignore[attr-defined]

"""One settings class for the service, read from ``DISTILLERY_*`` environment variables.

The defaults are the embedded deployment: everything under ``DISTILLERY_HOME`` (SQLite database,
a broker transport kept in a SQLite file, artifacts and job working directories on disk).
Setting ``DISTILLERY_DATABASE_URL`` and ``DISTILLERY_BROKER_URL`` moves to PostgreSQL and Redis.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.estimate import Limits


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DISTILLERY_", extra="ignore")

    home: Path = Field(Path("~/.distillery"), description="Root of the embedded deployment's files.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite under home.")
    broker_url: str | None = Field(None, description="Celery broker; default: a SQLite file under home.")
    artifacts_url: str | None = Field(
        None, description="A directory or s3://bucket/prefix; default: home/artifacts."
    )
    s3_endpoint: str | None = Field(
        None, description="The S3-compatible service's URL (MinIO, Ceph); default: AWS's."
    )
    data_root: Path | None = Field(None, description="Datasets and uploads; default: home/data.")
    work_dir: Path | None = Field(None, description="Jobs' working directories (checkpoints).")
    examples_dir: Path | None = Field(
        None, description="The example specs offered as templates; default: the project's examples/."
    )

    lease_s: float = Field(
        60.0, gt=0, description="A worker's claim on a job lasts this long unless renewed."
    )
    max_attempts: int = Field(3, ge=1, description="Runs of a job before a lost worker fails it.")
    dispatch_interval_s: float = Field(2.0, gt=0, description="How often queued jobs are (re)published.")
    republish_after_s: float = Field(
        300.0,
        gt=0,
        description="Republish a job its online host has not taken for this long (the broker lost it).",
    )
    heartbeat_s: float = Field(5.0, gt=0, description="How often a worker reports to the pool view.")
    worker_timeout_s: float = Field(30.0, gt=0, description="Silence after which a worker is marked lost.")
    cancel_grace_s: float = Field(30.0, gt=0, description="Cooperative cancellation before termination.")
    task_time_limit_s: int = Field(7 * 24 * 3600, gt=0, description="Hard limit for one attempt.")
    max_upload_bytes: int = Field(512 * 1024 * 1024, gt=0)
    max_unpacked_bytes: int = Field(
        2 << 30,
        gt=0,
        description="The most an uploaded dataset archive's arrays may unpack to (checked from its "
        "headers before anything is decompressed).",
    )
    max_spec_bytes: int = Field(
        1 << 20, gt=0, description="The largest job spec (JSON or YAML) a request may carry."
    )
    admin_token: SecretStr | None = Field(
        None, description="At start-up, make sure an admin token with this value exists (first use)."
    )
    rate_limit: str = Field(
        "1200/minute", description="Requests per token (limits' syntax: '20/second', '1200/minute')."
    )
    rate_limit_storage: str | None = Field(
        None,
        description="Where request counts live (memory://, redis://...); default: the broker's Redis, "
        "else this process's memory.",
    )
    max_streams_per_token: int = Field(
        8, ge=1, le=10_000, description="Open event streams one API token may hold in one API process."
    )
    max_streams: int = Field(
        200, ge=1, le=100_000, description="Open event streams one API process serves at once."
    )
    answer_cache_bytes: int = Field(
        32 * 2**20,
        ge=0,
        description="Bytes of full answers (a job's, a list page's) each API process keeps by ETag; "
        "0 keeps none (every full GET is built again).",
    )
    device: str = Field("auto", description="The worker's device: auto, cpu, cuda, cuda:N.")
    sandbox: Literal["auto", "required", "off"] = Field(
        "auto",
        description="Confine each job's engine process with Landlock: auto (where the kernel has "
        "it, else run unconfined and say so), required (else fail the job), off.",
    )
    engine_server: bool = Field(
        True,
        description="Fork each job's engine process from a server that imported the engine once "
        "per worker host (a job starts in milliseconds); false: a fresh interpreter per job.",
    )
    # What one job may ask for, checked from its spec before it is stored (core.estimate).
    max_params: int = Field(Limits.max_params, gt=0, description="Parameters of any one model.")
    max_job_memory: int = Field(
        Limits.max_job_memory,
        gt=0,
        description="Bytes of the largest stage: weights, gradients, optimizer state, activations.",
    )
    max_dataset_bytes: int = Field(Limits.max_dataset_bytes, gt=0, description="Bytes of any one dataset.")
    max_epoch_work: int = Field(
        Limits.max_epoch_work, gt=0, description="Multiply-accumulates in one epoch of one stage."
    )
    gpu_type: str = Field("any", description="This worker host's GPU type: it runs its type's and any jobs.")

    @field_validator("max_params", "max_job_memory", "max_dataset_bytes", "max_epoch_work", mode="before")
    @classmethod
    def _scientific(cls, value: object) -> object:
        # `DISTILLERY_MAX_PARAMS=1e9` reads better than nine zeros; only whole numbers are kept
        if isinstance(value, str) and "e" in value.lower():
            try:
                number = float(value)
            except ValueError:
                return value
            return int(number) if number.is_integer() else value
        return value

    @field_validator("admin_token", mode="before")
    @classmethod
    def _no_empty_admin_token(cls, value: object) -> object:
        # `DISTILLERY_ADMIN_TOKEN=` (compose passes an unset variable as empty) means none
        return None if value == "" else value

    @field_validator("admin_token")
    @classmethod
    def _long_admin_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError(
                "the admin token must be at least 16 characters (`distill admin bootstrap` makes one)"
            )
        return value

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit_parses(cls, value: str) -> str:
        from limits import parse

        try:
            parse(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a rate such as '20/second' or '1200/minute'") from None
        return value

    def resolved_home(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.resolved_home() / 'distillery.db'}"

    @property
    def broker(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.resolved_home() / 'broker.db'}"

    @property
    def rate_limit_store(self) -> str:
        """Shared between API processes when the broker is Redis, so a limit holds across them."""
        if self.rate_limit_storage:
            return self.rate_limit_storage
        return self.broker if self.broker.startswith(("redis://", "rediss://")) else "memory://"

    @property
    def artifacts_location(self) -> str:
        return self.artifacts_url or str(self.resolved_home() / "artifacts")

    @property
    def examples_path(self) -> Path:
        return (self.examples_dir or Path(__file__).resolve().parents[1] / "examples").expanduser()

    @property
    def data_path(self) -> Path:
        return (self.data_root or self.resolved_home() / "data").expanduser()

    @property
    def work_path(self) -> Path:
        return (self.work_dir or self.resolved_home() / "work").expanduser()


def masked_url(url: str) -> str:
    """``url`` fit for a log line or a terminal: its password (a database's, a broker's, the
    rate limiter's Redis) replaced by ``***``. Every URL the service prints goes through here."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: mask what sits between "user:" and "@"
        return re.sub(r"(//[^/@]*?:)[^/@]*@", r"\1***@", url)


@lru_cache
def get_settings() -> Settings:
    return Settings()

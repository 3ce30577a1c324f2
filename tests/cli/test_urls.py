"""What the CLI prints about where the service keeps things never shows a password."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cli.main import app as cli
from store.settings import masked_url
from tests.databases import fresh_postgres

SECRET = "s3cret-pw"


def test_migrate_prints_the_database_without_its_password(tmp_path: Path) -> None:
    with fresh_postgres("distillery_cli") as url:
        with_password = url.replace("postgres@", f"postgres:{SECRET}@")  # the test server trusts
        env = {"DISTILLERY_HOME": str(tmp_path), "DISTILLERY_DATABASE_URL": with_password}
        result = CliRunner().invoke(cli, ["migrate"], env=env)
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    assert f"database ready: {url.replace('postgres@', 'postgres:***@')}" in result.output


def test_every_kind_of_url_is_masked() -> None:
    assert masked_url("postgresql+psycopg://u:p%40ss@db:5432/x") == "postgresql+psycopg://u:***@db:5432/x"
    assert masked_url("redis://:hunter2@cache:6379/0") == "redis://:***@cache:6379/0"
    assert (
        masked_url("rediss://user:pw@cache/1?ssl_cert_reqs=none")
        == "rediss://user:***@cache/1?ssl_cert_reqs=none"
    )
    assert masked_url("amqp://guest:guest@rabbit//") == "amqp://guest:***@rabbit//"
    assert masked_url("sqla+sqlite:////srv/broker.db") == "sqla+sqlite:////srv/broker.db"
    assert masked_url("memory://") == "memory://"
    assert masked_url("odd://user:pw@host:notaport/") == "odd://user:***@host:notaport/"

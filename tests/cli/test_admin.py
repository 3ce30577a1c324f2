"""`distill admin`: the operator's commands, on a real database, and their tokens over HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from cli.main import app as cli
from store.settings import Settings


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"DISTILLERY_HOME": str(tmp_path), "DISTILLERY_DATABASE_URL": f"sqlite:///{tmp_path / 'd.db'}"}


def run(env: dict[str, str], *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(cli, ["admin", *args], env=env)
    assert result.exit_code == code, result.output
    return result.output


def test_operator_makes_a_team_a_user_and_tokens(env: dict[str, str], tmp_path: Path) -> None:
    admin_token = run(env, "bootstrap").splitlines()[0]
    assert admin_token.startswith("dst_")
    assert "team vision created" in run(env, "team", "create", "vision", "--max-running", "2")
    run(env, "team", "set", "vision", "--max-queued", "7", "--max-storage-gb", "1.5")
    run(env, "user", "create", "ana", "--team", "vision", "--role", "viewer")
    secret = run(env, "token", "create", "ana", "--label", "laptop").splitlines()[0]
    assert "error: user 'ana' exists" in run(env, "user", "create", "ana", "--team", "vision", code=1)
    assert "no team 'nope'" in run(env, "user", "create", "bo", "--team", "nope", code=1)
    assert "role must be one of" in run(
        env, "user", "create", "bo", "--team", "vision", "--role", "x", code=1
    )
    listing = run(env, "team", "list")
    assert "vision" in listing and "0/2" in listing and "0/7" in listing and "0/1500000000" in listing
    tokens = run(env, "token", "list", "--user", "ana")
    assert "active" in tokens and "laptop" in tokens and secret not in tokens

    settings = Settings(_env_file=None, home=tmp_path, database_url=env["DISTILLERY_DATABASE_URL"])
    app = create_app(settings, publish=lambda *_: None, run_dispatcher=False, check_broker=lambda: None)
    with TestClient(app) as http:
        me = http.get("/v1/me", headers={"Authorization": f"Bearer {secret}"}).json()
        assert me["user"] == "ana" and me["team"] == "vision" and me["role"] == "viewer"
        assert http.get("/v1/users", headers={"Authorization": f"Bearer {admin_token}"}).status_code == 200
        run(env, "token", "revoke", me["token_id"])
        assert http.get("/v1/me", headers={"Authorization": f"Bearer {secret}"}).status_code == 401
    run(env, "team", "set", "vision", "--unlimited", "running")
    assert "0/-" in run(env, "team", "list")
    assert "no token 'nope'" in run(env, "token", "revoke", "nope", code=1)

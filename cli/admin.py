"""``distill admin``: teams, users and tokens, written straight to the service's database.

For the operator on a machine that reaches the database (the same ``DISTILLERY_*`` settings as
the API): the first admin token comes from here (``distill admin bootstrap``) or from
``DISTILLERY_ADMIN_TOKEN``. With an admin token, the same is done over HTTP (``POST /v1/teams``,
``/v1/users``, ``/v1/tokens``, ``DELETE /v1/tokens/{id}``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.settings import Settings

app = typer.Typer(no_args_is_help=True, help="Teams, users and API tokens (operators, on the database).")
team_app = typer.Typer(no_args_is_help=True, help="Create teams, change their limits, list them.")
user_app = typer.Typer(no_args_is_help=True, help="Create users, list them.")
token_app = typer.Typer(no_args_is_help=True, help="Create, list and revoke API tokens.")
app.add_typer(team_app, name="team")
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")

GB = 10**9
MaxRunning = Annotated[int | None, typer.Option(min=0, help="Jobs holding a GPU at once.")]
MaxQueued = Annotated[int | None, typer.Option(min=0, help="Jobs waiting at once.")]
MaxStorage = Annotated[float | None, typer.Option(min=0, help="Artifacts and uploads kept, in GB.")]
Unlimited = Annotated[list[str] | None, typer.Option(help="Lift a limit: running, queued or storage.")]


@contextmanager
def _session() -> Iterator[Session]:
    """A unit of work on the configured database (migrated first); store errors exit 1."""
    from store.db import migrate, session_scope
    from store.identity import AlreadyExists, NotFound

    settings = Settings()
    migrate(settings.db_url)
    try:
        with session_scope(settings.db_url) as session:
            yield session
    except (AlreadyExists, NotFound, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None


@app.command()
def bootstrap(label: Annotated[str, typer.Option(help="What the token is for.")] = "bootstrap") -> None:
    """Print a new admin token (making the `admin` team and user if missing)."""
    from store.identity import ADMIN, create_token, ensure_admin_user

    with _session() as session:
        ensure_admin_user(session)
        token, secret = create_token(session, ADMIN, label=label)
        token_id = token.id
    typer.echo(secret)
    typer.echo(f"admin token {token_id} for user {ADMIN!r}: shown once, keep it safe", err=True)


@team_app.command("create")
def team_create(
    name: str,
    max_running: MaxRunning = None,
    max_queued: MaxQueued = 100,
    max_storage_gb: MaxStorage = None,
) -> None:
    """A team. Limits left out: no running or storage limit, 100 jobs waiting."""
    from store.identity import create_team

    storage = round(max_storage_gb * GB) if max_storage_gb is not None else None
    with _session() as session:
        create_team(session, name, max_running=max_running, max_queued=max_queued, max_storage_bytes=storage)
    typer.echo(f"team {name} created")


@team_app.command("set")
def team_set(
    name: str,
    max_running: MaxRunning = None,
    max_queued: MaxQueued = None,
    max_storage_gb: MaxStorage = None,
    unlimited: Unlimited = None,
) -> None:
    """Change a team's limits (those given); `--unlimited running` lifts one."""
    from store.models import Team

    lift = set(unlimited or [])
    if lift - {"running", "queued", "storage"}:
        typer.echo("error: --unlimited takes running, queued or storage", err=True)
        raise typer.Exit(2)
    with _session() as session:
        team = session.get(Team, name)
        if team is None:
            typer.echo(f"error: no team {name!r}", err=True)
            raise typer.Exit(1)
        if max_running is not None or "running" in lift:
            team.max_running = max_running
        if max_queued is not None or "queued" in lift:
            team.max_queued = max_queued
        if max_storage_gb is not None or "storage" in lift:
            team.max_storage_bytes = round(max_storage_gb * GB) if max_storage_gb is not None else None
    typer.echo(f"team {name} updated")


@team_app.command("list")
def team_list() -> None:
    """Teams, their limits and what they use now."""
    from store.models import Team
    from store.quotas import usage

    def show(limit: int | None) -> str:
        return "-" if limit is None else str(limit)

    with _session() as session:
        typer.echo(f"{'TEAM':<20} {'RUNNING':>11} {'QUEUED':>11} {'STORAGE (bytes)':>27}")
        for team in session.scalars(select(Team).order_by(Team.name)):
            used = usage(session, team.name)
            typer.echo(
                f"{team.name:<20} {f'{used.running}/{show(team.max_running)}':>11} "
                f"{f'{used.queued}/{show(team.max_queued)}':>11} "
                f"{f'{used.storage_bytes}/{show(team.max_storage_bytes)}':>27}"
            )


@user_app.command("create")
def user_create(
    name: str,
    team: Annotated[str, typer.Option(help="The user's team (it must exist).")],
    role: Annotated[str, typer.Option(help="admin, member or viewer.")] = "member",
) -> None:
    """A user in a team, with a role: members submit and cancel, viewers only read."""
    from store.identity import create_user

    with _session() as session:
        create_user(session, name, team=team, role=role)
    typer.echo(f"user {name} ({role}) created in team {team}")


@user_app.command("list")
def user_list() -> None:
    from store.models import User

    with _session() as session:
        for user in session.scalars(select(User).order_by(User.team, User.name)):
            typer.echo(f"{user.name:<24} {user.team:<20} {user.role}")


@token_app.command("create")
def token_create(user: str, label: Annotated[str, typer.Option(help="What the token is for.")] = "") -> None:
    """Print a new token for USER (shown once; only its hash is stored)."""
    from store.identity import create_token

    with _session() as session:
        token, secret = create_token(session, user, label=label)
        token_id = token.id
    typer.echo(secret)
    typer.echo(f"token {token_id} for {user}: shown once, keep it safe", err=True)


@token_app.command("revoke")
def token_revoke(token_id: str) -> None:
    """Refuse this token from the next request on."""
    from store.identity import revoke_token

    with _session() as session:
        revoke_token(session, token_id)
    typer.echo(f"token {token_id} revoked")


@token_app.command("list")
def token_list(user: Annotated[str | None, typer.Option(help="Only this user's.")] = None) -> None:
    """Token ids, users, labels and state (never the secrets)."""
    from store.models import ApiToken

    with _session() as session:
        stmt = select(ApiToken).order_by(ApiToken.created_at)
        if user is not None:
            stmt = stmt.where(ApiToken.user == user)
        for token in session.scalars(stmt):
            state = "revoked" if token.revoked_at else "active"
            typer.echo(f"{token.id}  {token.user:<20} {state:<8} {token.label}")

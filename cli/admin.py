"""``distill admin``: teams, users and tokens, written straight to the service's database.

For the operator on a machine that reaches the database (the same ``DISTILLERY_*`` settings as
the API): the first admin token comes from here (``distill admin bootstrap``) or from
``DISTILLERY_ADMIN_TOKEN``. With an admin token, the same is done over HTTP (``POST /v1/teams``,
``/v1/users``, ``/v1/tokens``, ``DELETE /v1/tokens/{id}``); both run ``domain.access``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from core.errors import DistilleryError, NotFoundError
from store.settings import Settings

app = typer.Typer(no_args_is_help=True, help="Teams, users and API tokens (operators, on the database).")
team_app = typer.Typer(no_args_is_help=True, help="Create teams, change their limits, list them.")
user_app = typer.Typer(no_args_is_help=True, help="Create users, list them.")
token_app = typer.Typer(no_args_is_help=True, help="Create, list and revoke API tokens.")
app.add_typer(team_app, name="team")
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")

GB = 10**9
MaxRunning = Annotated[
    int | None, typer.Option(min=0, help="GPU slots its jobs hold at once (an N-GPU job counts N).")
]
MaxQueued = Annotated[int | None, typer.Option(min=0, help="Jobs waiting at once.")]
MaxStorage = Annotated[float | None, typer.Option(min=0, help="Artifacts and uploads kept, in GB.")]
Unlimited = Annotated[list[str] | None, typer.Option(help="Lift a limit: running, queued or storage.")]
LIFTABLE = {"running": "max_running", "queued": "max_queued", "storage": "max_storage_bytes"}


def _db_url() -> str:
    return Settings().db_url


@contextmanager
def _refusals() -> Iterator[None]:
    """What the domain refuses (a taken name, an unknown team or token, a bad role): one line
    on stderr and exit code 1."""
    try:
        yield
    except DistilleryError as e:
        message = f"no {e.what} {e.ident!r}" if isinstance(e, NotFoundError) else e.message
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(1) from None


def _bytes(gigabytes: float | None) -> int | None:
    return round(gigabytes * GB) if gigabytes is not None else None


@app.command()
def bootstrap(label: Annotated[str, typer.Option(help="What the token is for.")] = "bootstrap") -> None:
    """Print a new admin token (making the `admin` team and user if missing)."""
    from domain import access

    with _refusals(), access.operator_session(_db_url()) as session:
        made = access.bootstrap_admin(session, label=label)
    typer.echo(made.secret)
    typer.echo(
        f"admin token {made.token.id} for user {made.token.user!r}: shown once, keep it safe", err=True
    )


@team_app.command("create")
def team_create(
    name: str,
    max_running: MaxRunning = None,
    max_queued: MaxQueued = 100,
    max_storage_gb: MaxStorage = None,
) -> None:
    """A team. Limits left out: no running or storage limit, 100 jobs waiting."""
    from domain import access

    with _refusals(), access.operator_session(_db_url()) as session:
        access.create_team(
            session,
            name,
            max_running=max_running,
            max_queued=max_queued,
            max_storage_bytes=_bytes(max_storage_gb),
        )
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
    from domain import access

    lift = set(unlimited or [])
    if lift - set(LIFTABLE):
        typer.echo("error: --unlimited takes running, queued or storage", err=True)
        raise typer.Exit(2)
    given = {
        "max_running": max_running,
        "max_queued": max_queued,
        "max_storage_bytes": _bytes(max_storage_gb),
    }
    changes: dict[str, int | None] = {key: value for key, value in given.items() if value is not None}
    changes |= {LIFTABLE[limit]: None for limit in lift if LIFTABLE[limit] not in changes}
    with _refusals(), access.operator_session(_db_url()) as session:
        access.set_team_limits(session, None, name, changes)
    typer.echo(f"team {name} updated")


@team_app.command("list")
def team_list() -> None:
    """Teams, their limits and what they use now."""
    from domain import access

    def show(limit: int | None) -> str:
        return "-" if limit is None else str(limit)

    with _refusals(), access.operator_session(_db_url()) as session:
        typer.echo(f"{'TEAM':<20} {'GPU SLOTS':>11} {'QUEUED':>11} {'STORAGE (bytes)':>27}")
        for view in access.list_teams(session):
            team, used = view.team, view.usage
            typer.echo(
                f"{team.name:<20} {f'{used.slots}/{show(team.max_running)}':>11} "
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
    from domain import access

    with _refusals(), access.operator_session(_db_url()) as session:
        access.create_user(session, name, team=team, role=role)
    typer.echo(f"user {name} ({role}) created in team {team}")


@user_app.command("list")
def user_list() -> None:
    from domain import access

    with _refusals(), access.operator_session(_db_url()) as session:
        for user in access.list_users(session):
            typer.echo(f"{user.name:<24} {user.team:<20} {user.role}")


@token_app.command("create")
def token_create(user: str, label: Annotated[str, typer.Option(help="What the token is for.")] = "") -> None:
    """Print a new token for USER (shown once; only its hash is stored)."""
    from domain import access

    with _refusals(), access.operator_session(_db_url()) as session:
        made = access.create_token(session, user, label=label)
    typer.echo(made.secret)
    typer.echo(f"token {made.token.id} for {user}: shown once, keep it safe", err=True)


@token_app.command("revoke")
def token_revoke(token_id: str) -> None:
    """Refuse this token from the next request on."""
    from domain import access

    with _refusals(), access.operator_session(_db_url()) as session:
        access.revoke_token(session, token_id)
    typer.echo(f"token {token_id} revoked")


@token_app.command("list")
def token_list(user: Annotated[str | None, typer.Option(help="Only this user's.")] = None) -> None:
    """Token ids, users, labels and state (never the secrets)."""
    from domain import access

    with _refusals(), access.operator_session(_db_url()) as session:
        for token in access.list_tokens(session, user=user):
            state = "revoked" if token.revoked_at else "active"
            typer.echo(f"{token.id}  {token.user:<20} {state:<8} {token.label}")

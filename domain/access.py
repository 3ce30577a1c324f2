"""Teams, users and tokens, and the audit trail: one set of operations for the admin routes
(``api/routes/admin.py``) and the operator's CLI (``distill admin``).

The rules live here: who sees which team, which roles exist, that naming a team or a user that
does not exist is a mistake in the request (a field error) rather than a missing resource, and
that a team's limits change only where asked. The queries are ``store.identity``'s. Functions
take a session and never commit; ``operator_session`` is the CLI's unit of work.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy.orm import Session

from core.errors import InvalidRequestError, NotFoundError
from domain.activity import RowPage
from store import identity
from store.audit import AUDIT_KINDS, AuditEntry, audit_trail
from store.db import migrate, session_scope
from store.identity import Caller
from store.models import ROLES, ApiToken, Team, User
from store.quotas import Usage, usage

LIMITS = ("max_running", "max_queued", "max_storage_bytes")
"""A team's limits; ``None`` for each means no limit."""


@contextmanager
def operator_session(db_url: str) -> Iterator[Session]:
    """The operator's unit of work on the configured database, brought to the latest schema
    first (the CLI may run before the API ever has): committed when the block ends."""
    migrate(db_url)
    with session_scope(db_url) as session:
        yield session


# ---------------------------------------------------------------- teams


@dataclass(frozen=True)
class TeamView:
    """A team with what it uses now (jobs waiting and running, bytes kept)."""

    team: Team
    usage: Usage


def _view(session: Session, team: Team) -> TeamView:
    return TeamView(team, usage(session, team.name))


def create_team(
    session: Session,
    name: str,
    *,
    max_running: int | None = None,
    max_queued: int | None = None,
    max_storage_bytes: int | None = None,
) -> TeamView:
    """``AlreadyExistsError`` if the name is taken."""
    team = identity.create_team(
        session, name, max_running=max_running, max_queued=max_queued, max_storage_bytes=max_storage_bytes
    )
    return _view(session, team)


def list_teams(session: Session, caller: Caller | None = None) -> list[TeamView]:
    """Every team for an admin or the operator (``caller`` None); the caller's own otherwise."""
    only = None if caller is None or caller.is_admin else caller.team
    return [_view(session, team) for team in identity.list_teams(session, name=only)]


def get_team(session: Session, caller: Caller | None, name: str) -> TeamView:
    """A team the caller may see; another team's is as missing as one that does not exist."""
    team = identity.get_team(session, name)
    if team is None or (caller is not None and not caller.sees(name)):
        raise NotFoundError("team", name)
    return _view(session, team)


def set_team_limits(
    session: Session, caller: Caller | None, name: str, changes: Mapping[str, int | None]
) -> TeamView:
    """Change only the limits in ``changes`` (``None`` lifts one). Both the route's PATCH (the
    fields sent) and the CLI's options (those given, and ``--unlimited``) come down to this.
    New limits apply to the next submission and scheduling pass; running jobs never stop."""
    unknown = set(changes) - set(LIMITS)
    if unknown:
        raise ValueError(f"not a team limit: {', '.join(sorted(unknown))}")
    view = get_team(session, caller, name)
    for key, value in changes.items():
        setattr(view.team, key, value)
    session.flush()
    return _view(session, view.team)


# ---------------------------------------------------------------- users and tokens


def create_user(session: Session, name: str, *, team: str, role: str) -> User:
    """A user of an existing team. A team that does not exist is an error of the request's
    ``team`` field (the user is what is being made, not the team); a taken name is
    ``AlreadyExistsError``."""
    if role not in ROLES:
        raise InvalidRequestError.field(
            "role",
            f"must be one of {', '.join(ROLES)}",
            detail=f"role must be one of {', '.join(ROLES)}, not {role!r}",
        )
    try:
        return identity.create_user(session, name, team=team, role=role)
    except NotFoundError:
        raise InvalidRequestError.field("team", "no such team", detail=f"no team {team!r}") from None


def list_users(session: Session, *, team: str | None = None) -> list[User]:
    return identity.list_users(session, team=team)


@dataclass(frozen=True)
class NewToken:
    """A token just made, and its secret: shown this once, only its hash is stored."""

    token: ApiToken
    secret: str


def create_token(session: Session, user: str, *, label: str = "") -> NewToken:
    """A token for an existing user; a user that does not exist is an error of the ``user`` field."""
    try:
        token, secret = identity.create_token(session, user, label=label)
    except NotFoundError:
        raise InvalidRequestError.field("user", "no such user", detail=f"no user {user!r}") from None
    session.flush()  # its id and creation time, for the answer
    return NewToken(token, secret)


def revoke_token(session: Session, token_id: str) -> ApiToken:
    """Refused from the next request on, by every API process; revoking twice is harmless.
    ``NotFoundError`` for an unknown id."""
    return identity.revoke_token(session, token_id)


def list_tokens(session: Session, *, user: str | None = None) -> list[ApiToken]:
    """Oldest first; never their secrets (only hashes are stored)."""
    return identity.list_tokens(session, user=user)


def bootstrap_admin(session: Session, *, label: str = "bootstrap") -> NewToken:
    """A new admin token, making the ``admin`` team and user first if they are missing."""
    identity.ensure_admin_user(session)
    return create_token(session, identity.ADMIN, label=label)


# ---------------------------------------------------------------- the audit trail


def audit_page(
    session: Session,
    caller: Caller,
    *,
    actor: str | None = None,
    job_id: str | None = None,
    kinds: Sequence[str] | None = None,
    after: int = 0,
    limit: int = 200,
) -> RowPage[AuditEntry]:
    """Who submitted, cancelled and deleted what, oldest first, deleted jobs included: every
    team's for an admin, the caller's team's otherwise. ``after`` is the last event id seen."""
    entries = audit_trail(
        session,
        teams=None if caller.is_admin else [caller.team],
        actor=actor,
        job_id=job_id,
        kinds=kinds or AUDIT_KINDS,
        after=after,
        limit=limit + 1,
    )
    return RowPage.of(entries, limit, after, key=lambda entry: entry.event.id)

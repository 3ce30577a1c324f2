"""Identities: teams, users with a role, and bearer tokens stored only as hashes.

A token is ``dst_`` + 43 random URL-safe characters (256 bits). With that much entropy a single
SHA-256 is the right hash: nothing to brute-force, and a lookup is one indexed equality, so every
request can check revocation in the database (a revoked token is refused at once, on every API
process). Functions take a session and never commit; they raise ``AlreadyExistsError`` and
``NotFoundError`` (``core.errors``), and leave the rules (who may do what, which role) to
``domain.access``.
"""

from __future__ import annotations

import hashlib
import secrets
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.errors import AlreadyExistsError, NotFoundError
from store.models import ApiToken, Team, User, as_utc, utcnow

TOKEN_PREFIX = "dst_"
ADMIN = "admin"  # the user and the team DISTILLERY_ADMIN_TOKEN and `distill admin bootstrap` make
LAST_USED_EVERY = timedelta(minutes=1)  # how stale `last_used_at` may get (saves a write per request)


@dataclass(frozen=True)
class Caller:
    """Who makes a request: the user of the token, their team and role."""

    user: str
    team: str
    role: str
    token_id: str
    # whether the team had a queue or storage limit when the token was read with the request
    # (``store.reads.TOKEN``); None if not read: ``store.quotas.admit_job`` reads it then
    team_limited: bool | None = field(default=None, compare=False)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def can_write(self) -> bool:
        """Submit, cancel, delete, upload: members and admins; viewers only read."""
        return self.role in ("admin", "member")

    def sees(self, team: str | None) -> bool:
        """Admins see every team; everyone else their own team only."""
        return self.is_admin or team == self.team


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _add(session: Session, row: object, what: str) -> None:
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        raise AlreadyExistsError(what) from None


def create_team(
    session: Session,
    name: str,
    *,
    max_running: int | None = None,
    max_queued: int | None = None,
    max_storage_bytes: int | None = None,
) -> Team:
    if session.get(Team, name) is not None:
        raise AlreadyExistsError(f"team {name!r} exists")
    team = Team(
        name=name, max_running=max_running, max_queued=max_queued, max_storage_bytes=max_storage_bytes
    )
    _add(session, team, f"team {name!r} exists")
    return team


def create_user(session: Session, name: str, *, team: str, role: str) -> User:
    if session.get(Team, team) is None:
        raise NotFoundError("team", team)
    if session.get(User, name) is not None:
        raise AlreadyExistsError(f"user {name!r} exists")
    user = User(name=name, team=team, role=role)
    _add(session, user, f"user {name!r} exists")
    return user


def create_token(
    session: Session, user: str, *, label: str = "", secret: str | None = None
) -> tuple[ApiToken, str]:
    """A new token for ``user``; the secret is returned here and never again."""
    if session.get(User, user) is None:
        raise NotFoundError("user", user)
    secret = secret or new_secret()
    token = ApiToken(user=user, token_hash=hash_token(secret), label=label)
    _add(session, token, "this token exists already")
    return token, secret


def revoke_token(session: Session, token_id: str) -> ApiToken:
    token = session.get(ApiToken, token_id)
    if token is None:
        raise NotFoundError("token", token_id)
    if token.revoked_at is None:
        token.revoked_at = utcnow()
    session.flush()
    return token


def get_team(session: Session, name: str) -> Team | None:
    return session.get(Team, name)


def list_teams(session: Session, *, name: str | None = None) -> list[Team]:
    """Teams by name; with ``name``, that one only (none if it does not exist)."""
    stmt = select(Team).order_by(Team.name)
    if name is not None:
        stmt = stmt.where(Team.name == name)
    return list(session.scalars(stmt))


def list_users(session: Session, *, team: str | None = None) -> list[User]:
    stmt = select(User).order_by(User.team, User.name)
    if team is not None:
        stmt = stmt.where(User.team == team)
    return list(session.scalars(stmt))


def list_tokens(session: Session, *, user: str | None = None) -> list[ApiToken]:
    stmt = select(ApiToken).order_by(ApiToken.created_at)
    if user is not None:
        stmt = stmt.where(ApiToken.user == user)
    return list(session.scalars(stmt))


@dataclass(frozen=True)
class Authenticated:
    caller: Caller
    last_used_at: datetime | None


def authenticate(session: Session, secret: str) -> Authenticated | None:
    """The caller a token stands for; None for an unknown or revoked token. Reads only: a
    request must never hold a lock on its token's row (see ``mark_used``)."""
    row = session.execute(
        select(ApiToken.id, ApiToken.last_used_at, User.name, User.team, User.role)
        .join(User, User.name == ApiToken.user)
        .where(ApiToken.token_hash == hash_token(secret), ApiToken.revoked_at.is_(None))
    ).first()
    if row is None:
        return None
    token_id, last_used_at, user, team, role = row
    caller = Caller(user=user, team=team, role=role, token_id=token_id)
    return Authenticated(caller, None if last_used_at is None else as_utc(last_used_at))


def used_long_ago(last_used_at: datetime | None, now: datetime | None = None) -> bool:
    """Whether ``last_used_at`` is stale enough to be written again."""
    return last_used_at is None or (now or utcnow()) - last_used_at > LAST_USED_EVERY


def mark_used(session: Session, token_id: str) -> bool:
    """Move ``last_used_at`` to now unless another request did so within ``LAST_USED_EVERY``.

    One conditional UPDATE, meant to be committed at once in a transaction of its own: of many
    concurrent requests with one token, the first writes and the others match no row once it
    commits, so no request waits on another's row lock for longer than that one statement.
    """
    now = utcnow()
    result = session.execute(
        update(ApiToken)
        .where(
            ApiToken.id == token_id,
            or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at < now - LAST_USED_EVERY),
        )
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def token_valid(session: Session, token_id: str) -> bool:
    token = session.get(ApiToken, token_id, populate_existing=True)
    return token is not None and token.revoked_at is None


def ensure_admin_user(session: Session) -> None:
    """The ``admin`` team and user (role admin), unless they exist."""
    if session.get(Team, ADMIN) is None:
        with suppress(AlreadyExistsError):  # another API process made it at the same moment
            create_team(session, ADMIN)
    if session.get(User, ADMIN) is None:
        with suppress(AlreadyExistsError):
            create_user(session, ADMIN, team=ADMIN, role="admin")


def ensure_admin(session: Session, secret: str, *, revive: bool = True) -> ApiToken:
    """Make sure an admin token with this value exists (``DISTILLERY_ADMIN_TOKEN``).

    Creates the ``admin`` team and user if missing. At start-up (``revive``) a revoked token with
    this value works again, because the operator who set the variable asked for it; between
    start-ups a revocation holds.
    """
    ensure_admin_user(session)
    token = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(secret)))
    if token is None:
        try:
            token, _ = create_token(session, ADMIN, label="DISTILLERY_ADMIN_TOKEN", secret=secret)
        except AlreadyExistsError:  # another process made it at the same moment
            token = session.scalars(select(ApiToken).where(ApiToken.token_hash == hash_token(secret))).one()
    if revive:
        token.revoked_at = None
    session.flush()
    return token


def any_token(session: Session) -> bool:
    return session.scalar(select(ApiToken.id).where(ApiToken.revoked_at.is_(None)).limit(1)) is not None

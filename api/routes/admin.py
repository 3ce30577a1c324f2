"""Teams, users and tokens (admins), who you are, and the audit trail (DESIGN.md §5).

A token's secret is in the answer to ``POST /v1/tokens`` and nowhere else: only its SHA-256 is
stored. ``DELETE /v1/tokens/{id}`` revokes it for every API process at once.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from api.auth import AdminDep, CallerDep
from api.cursors import decode_row_cursor
from api.deps import SessionDep
from api.inputs import ByteCount, Count, Name, Text
from api.problems import Problem, ProblemError, invalid, not_found
from api.schemas import UTCDateTime
from store.audit import AUDIT_KINDS, audit_trail
from store.identity import AlreadyExists, NotFound, create_team, create_token, create_user, revoke_token
from store.models import ApiToken, Team, User
from store.quotas import usage

router = APIRouter(prefix="/v1", tags=["access"])

Role = Literal["admin", "member", "viewer"]
_ADMIN: dict[int | str, dict[str, Any]] = {403: {"model": Problem, "description": "Not an admin."}}
_EXISTS: dict[int | str, dict[str, Any]] = {409: {"model": Problem, "description": "The name is taken."}}


class TeamIn(BaseModel):
    name: Name
    max_running: Count | None = Field(None, description="Jobs holding a GPU at once; null: no limit.")
    max_queued: Count | None = Field(100, description="Jobs waiting at once; null: no limit.")
    max_storage_bytes: ByteCount | None = Field(
        None, description="Artifacts and uploads kept; null: no limit."
    )


class TeamLimits(BaseModel):
    max_running: Count | None = None
    max_queued: Count | None = None
    max_storage_bytes: ByteCount | None = None


class TeamUsage(BaseModel):
    queued: int
    running: int
    storage_bytes: int


class TeamOut(BaseModel):
    name: str
    max_running: int | None
    max_queued: int | None
    max_storage_bytes: int | None
    usage: TeamUsage
    created_at: UTCDateTime


class TeamList(BaseModel):
    items: list[TeamOut]


class UserIn(BaseModel):
    name: Name
    team: Name
    role: Role = "member"


class UserOut(BaseModel):
    name: str
    team: str
    role: Role
    created_at: UTCDateTime


class UserList(BaseModel):
    items: list[UserOut]


class TokenIn(BaseModel):
    user: Name
    label: Text = Field("", max_length=200, description="What the token is for (a laptop, a CI job).")


class TokenOut(BaseModel):
    id: str
    user: str
    label: str
    created_at: UTCDateTime
    last_used_at: UTCDateTime | None
    revoked_at: UTCDateTime | None


class NewToken(TokenOut):
    token: str = Field(description="The secret: shown this once, never stored. Send as `Bearer`.")


class TokenList(BaseModel):
    items: list[TokenOut]


class Me(BaseModel):
    user: str
    team: str
    role: Role
    token_id: str


class AuditEntryOut(BaseModel):
    id: int
    at: UTCDateTime
    kind: str = Field(description="submitted, cancel or deleted.")
    actor: str | None
    message: str
    job_id: str
    job_name: str
    team: str | None


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
    next_cursor: str
    has_more: bool


def _team_out(session: SessionDep, team: Team) -> TeamOut:
    used = usage(session, team.name)
    return TeamOut(
        name=team.name,
        max_running=team.max_running,
        max_queued=team.max_queued,
        max_storage_bytes=team.max_storage_bytes,
        usage=TeamUsage(queued=used.queued, running=used.running, storage_bytes=used.storage_bytes),
        created_at=team.created_at,
    )


def _token_out(token: ApiToken) -> TokenOut:
    return TokenOut.model_validate(token, from_attributes=True)


@router.get("/me", response_model=Me, summary="Who the token stands for")
def me(caller: CallerDep) -> Me:
    return Me.model_validate(
        {"user": caller.user, "team": caller.team, "role": caller.role, "token_id": caller.token_id}
    )


@router.post(
    "/teams", status_code=201, response_model=TeamOut, summary="Create a team", responses=_ADMIN | _EXISTS
)
def post_team(body: TeamIn, session: SessionDep, _admin: AdminDep, response: Response) -> TeamOut:
    try:
        team = create_team(session, body.name, **body.model_dump(exclude={"name"}))
    except AlreadyExists as e:
        raise ProblemError(409, str(e), kind="exists") from None
    response.headers["Location"] = f"/v1/teams/{team.name}"
    return _team_out(session, team)


@router.get("/teams", response_model=TeamList, summary="Teams with their limits and usage")
def list_teams(session: SessionDep, caller: CallerDep) -> TeamList:
    """Every team for an admin; your own team otherwise."""
    stmt = select(Team).order_by(Team.name)
    if not caller.is_admin:
        stmt = stmt.where(Team.name == caller.team)
    return TeamList(items=[_team_out(session, t) for t in session.scalars(stmt)])


def _visible_team(session: SessionDep, caller: CallerDep, name: str) -> Team:
    team = session.get(Team, name)
    if team is None or not caller.sees(name):
        raise not_found("team", name)
    return team


@router.get("/teams/{name}", response_model=TeamOut, summary="A team, its limits and usage")
def get_team(name: Annotated[str, Path(max_length=100)], session: SessionDep, caller: CallerDep) -> TeamOut:
    return _team_out(session, _visible_team(session, caller, name))


@router.patch("/teams/{name}", response_model=TeamOut, summary="Change a team's limits", responses=_ADMIN)
def patch_team(
    name: Annotated[str, Path(max_length=100)], body: TeamLimits, session: SessionDep, caller: AdminDep
) -> TeamOut:
    """Only the fields sent change (send `null` to lift a limit). New limits apply to the next
    submission and the next scheduling pass; running jobs are never stopped."""
    team = _visible_team(session, caller, name)
    for key, value in body.model_dump(exclude_unset=True).items():
        setattr(team, key, value)
    session.flush()
    return _team_out(session, team)


@router.post(
    "/users", status_code=201, response_model=UserOut, summary="Create a user", responses=_ADMIN | _EXISTS
)
def post_user(body: UserIn, session: SessionDep, _admin: AdminDep) -> UserOut:
    try:
        user = create_user(session, body.name, team=body.team, role=body.role)
    except NotFound:
        raise invalid("team", "no such team", detail=f"no team {body.team!r}") from None
    except AlreadyExists as e:
        raise ProblemError(409, str(e), kind="exists") from None
    return UserOut.model_validate(user, from_attributes=True)


@router.get("/users", response_model=UserList, summary="Users", responses=_ADMIN)
def list_users(
    session: SessionDep, _admin: AdminDep, team: Annotated[str | None, Query(max_length=100)] = None
) -> UserList:
    stmt = select(User).order_by(User.team, User.name)
    if team is not None:
        stmt = stmt.where(User.team == team)
    return UserList(items=[UserOut.model_validate(u, from_attributes=True) for u in session.scalars(stmt)])


@router.post("/tokens", status_code=201, response_model=NewToken, summary="Create a token", responses=_ADMIN)
def post_token(body: TokenIn, session: SessionDep, _admin: AdminDep) -> NewToken:
    """The answer holds the secret (`token`), shown this once."""
    try:
        token, secret = create_token(session, body.user, label=body.label)
    except NotFound:
        raise invalid("user", "no such user", detail=f"no user {body.user!r}") from None
    session.flush()
    return NewToken(**_token_out(token).model_dump(), token=secret)


@router.get("/tokens", response_model=TokenList, summary="Tokens (never their secrets)", responses=_ADMIN)
def list_tokens(
    session: SessionDep, _admin: AdminDep, user: Annotated[str | None, Query(max_length=100)] = None
) -> TokenList:
    stmt = select(ApiToken).order_by(ApiToken.created_at)
    if user is not None:
        stmt = stmt.where(ApiToken.user == user)
    return TokenList(items=[_token_out(t) for t in session.scalars(stmt)])


@router.delete(
    "/tokens/{token_id}",
    status_code=204,
    response_class=Response,
    summary="Revoke a token",
    responses=_ADMIN | {404: {"model": Problem, "description": "No such token."}},
)
def delete_token(
    token_id: Annotated[str, Path(max_length=64)], session: SessionDep, _admin: AdminDep
) -> Response:
    """Refused from the next request on, by every API process; revoking twice is harmless."""
    try:
        revoke_token(session, token_id)
    except NotFound:
        raise not_found("token", token_id) from None
    return Response(status_code=204)


@router.get("/audit", response_model=AuditPage, summary="Who submitted, cancelled, deleted what, when")
def get_audit(
    session: SessionDep,
    caller: CallerDep,
    actor: Annotated[str | None, Query(max_length=100)] = None,
    job_id: Annotated[str | None, Query(max_length=64)] = None,
    kind: Annotated[list[Literal["submitted", "cancel", "deleted"]] | None, Query()] = None,
    after: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> AuditPage:
    """Oldest first; deleted jobs included. An admin sees every team's, others their own team's."""
    start = decode_row_cursor(after) if after else 0
    entries = audit_trail(
        session,
        teams=None if caller.is_admin else [caller.team],
        actor=actor,
        job_id=job_id,
        kinds=kind or AUDIT_KINDS,
        after=start,
        limit=limit + 1,
    )
    items = [
        AuditEntryOut(
            id=e.event.id,
            at=e.event.at,
            kind=e.event.kind,
            actor=e.event.actor,
            message=e.event.message,
            job_id=e.event.job_id,
            job_name=e.job_name,
            team=e.team,
        )
        for e in entries[:limit]
    ]
    return AuditPage(
        items=items, next_cursor=str(items[-1].id if items else start), has_more=len(entries) > limit
    )

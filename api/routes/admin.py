"""Teams, users and tokens (admins), who you are, and the audit trail (DESIGN.md §5).

A token's secret is in the answer to ``POST /v1/tokens`` and nowhere else: only its SHA-256 is
stored. ``DELETE /v1/tokens/{id}`` revokes it for every API process at once. The operations are
``domain.access``'s, shared with ``distill admin``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field

from api.auth import AdminDep, CallerDep
from api.cursors import decode_row_cursor
from api.deps import SessionDep
from api.inputs import ByteCount, Count, Name, Text
from api.problems import Problem
from api.schemas import UTCDateTime
from domain import access
from domain.access import TeamView
from store.models import ApiToken

router = APIRouter(prefix="/v1", tags=["access"])

Role = Literal["admin", "member", "viewer"]
_ADMIN: dict[int | str, dict[str, Any]] = {403: {"model": Problem, "description": "Not an admin."}}
_EXISTS: dict[int | str, dict[str, Any]] = {409: {"model": Problem, "description": "The name is taken."}}


class TeamIn(BaseModel):
    name: Name
    max_running: Count | None = Field(
        None, description="GPU slots its jobs hold at once (an N-GPU job counts N); null: no limit."
    )
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
    slots: int = Field(description="GPU slots its started and dispatched jobs hold: what max_running limits.")


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


def _team_out(view: TeamView) -> TeamOut:
    team, used = view.team, view.usage
    return TeamOut(
        name=team.name,
        max_running=team.max_running,
        max_queued=team.max_queued,
        max_storage_bytes=team.max_storage_bytes,
        usage=TeamUsage(
            queued=used.queued, running=used.running, storage_bytes=used.storage_bytes, slots=used.slots
        ),
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
    view = access.create_team(session, body.name, **body.model_dump(exclude={"name"}))
    response.headers["Location"] = f"/v1/teams/{view.team.name}"
    return _team_out(view)


@router.get("/teams", response_model=TeamList, summary="Teams with their limits and usage")
def list_teams(session: SessionDep, caller: CallerDep) -> TeamList:
    """Every team for an admin; your own team otherwise."""
    return TeamList(items=[_team_out(v) for v in access.list_teams(session, caller)])


@router.get("/teams/{name}", response_model=TeamOut, summary="A team, its limits and usage")
def get_team(name: Annotated[str, Path(max_length=100)], session: SessionDep, caller: CallerDep) -> TeamOut:
    return _team_out(access.get_team(session, caller, name))


@router.patch("/teams/{name}", response_model=TeamOut, summary="Change a team's limits", responses=_ADMIN)
def patch_team(
    name: Annotated[str, Path(max_length=100)], body: TeamLimits, session: SessionDep, caller: AdminDep
) -> TeamOut:
    """Only the fields sent change (send `null` to lift a limit). New limits apply to the next
    submission and the next scheduling pass; running jobs are never stopped."""
    return _team_out(access.set_team_limits(session, caller, name, body.model_dump(exclude_unset=True)))


@router.post(
    "/users", status_code=201, response_model=UserOut, summary="Create a user", responses=_ADMIN | _EXISTS
)
def post_user(body: UserIn, session: SessionDep, _admin: AdminDep) -> UserOut:
    user = access.create_user(session, body.name, team=body.team, role=body.role)
    return UserOut.model_validate(user, from_attributes=True)


@router.get("/users", response_model=UserList, summary="Users", responses=_ADMIN)
def list_users(
    session: SessionDep, _admin: AdminDep, team: Annotated[str | None, Query(max_length=100)] = None
) -> UserList:
    users = access.list_users(session, team=team)
    return UserList(items=[UserOut.model_validate(u, from_attributes=True) for u in users])


@router.post("/tokens", status_code=201, response_model=NewToken, summary="Create a token", responses=_ADMIN)
def post_token(body: TokenIn, session: SessionDep, _admin: AdminDep) -> NewToken:
    """The answer holds the secret (`token`), shown this once."""
    made = access.create_token(session, body.user, label=body.label)
    return NewToken(**_token_out(made.token).model_dump(), token=made.secret)


@router.get("/tokens", response_model=TokenList, summary="Tokens (never their secrets)", responses=_ADMIN)
def list_tokens(
    session: SessionDep, _admin: AdminDep, user: Annotated[str | None, Query(max_length=100)] = None
) -> TokenList:
    return TokenList(items=[_token_out(t) for t in access.list_tokens(session, user=user)])


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
    access.revoke_token(session, token_id)
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
    page = access.audit_page(
        session, caller, actor=actor, job_id=job_id, kinds=kind, after=decode_row_cursor(after), limit=limit
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
        for e in page.items
    ]
    return AuditPage(items=items, next_cursor=str(page.next_cursor), has_more=page.has_more)

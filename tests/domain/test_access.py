"""Teams, users and tokens: the one set of operations behind the admin routes and `distill admin`."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import AlreadyExistsError, FieldIssue, InvalidRequestError, NotFoundError
from domain import access
from store.db import session_scope
from store.identity import Caller, authenticate

ADMIN = Caller(user="root", team="ops", role="admin", token_id="t0")


def member(team: str, role: str = "member") -> Caller:
    return Caller(user=f"someone-of-{team}", team=team, role=role, token_id="t1")


def test_teams_are_seen_by_admins_and_their_own_members(db_url: str) -> None:
    with session_scope(db_url) as session:
        made = access.create_team(session, "vision", max_running=2)
        access.create_team(session, "audio")
        assert (made.team.max_queued, made.usage.queued, made.usage.storage_bytes) == (None, 0, 0)
        with pytest.raises(AlreadyExistsError, match="team 'vision' exists"):
            access.create_team(session, "vision")
    with session_scope(db_url) as session:
        assert [v.team.name for v in access.list_teams(session)] == ["audio", "vision"]  # the operator
        assert [v.team.name for v in access.list_teams(session, ADMIN)] == ["audio", "vision"]
        assert [v.team.name for v in access.list_teams(session, member("vision"))] == ["vision"]
        assert access.get_team(session, member("vision"), "vision").team.max_running == 2
        for caller, name in ((member("audio"), "vision"), (ADMIN, "nope")):
            with pytest.raises(NotFoundError) as missing:
                access.get_team(session, caller, name)
            assert (missing.value.what, missing.value.ident) == ("team", name)


def test_only_the_limits_named_change(db_url: str) -> None:
    with session_scope(db_url) as session:
        access.create_team(session, "vision", max_running=2, max_queued=7, max_storage_bytes=10)
    with session_scope(db_url) as session:
        view = access.set_team_limits(session, ADMIN, "vision", {"max_queued": 3, "max_storage_bytes": None})
        assert (view.team.max_running, view.team.max_queued, view.team.max_storage_bytes) == (2, 3, None)
        with pytest.raises(NotFoundError):
            access.set_team_limits(session, None, "nope", {"max_queued": 1})
        with pytest.raises(ValueError, match="not a team limit: name"):
            access.set_team_limits(session, None, "vision", {"name": 1})
    with session_scope(db_url) as session:
        assert access.get_team(session, None, "vision").team.max_queued == 3


def test_naming_what_does_not_exist_is_an_error_of_that_field(db_url: str) -> None:
    with session_scope(db_url) as session:
        access.create_team(session, "vision")
        access.create_user(session, "ana", team="vision", role="viewer")
        with pytest.raises(InvalidRequestError) as no_team:
            access.create_user(session, "bo", team="nope", role="member")
        assert no_team.value.message == "no team 'nope'"
        assert no_team.value.errors == (FieldIssue("team", "no such team"),)
        with pytest.raises(InvalidRequestError) as bad_role:
            access.create_user(session, "bo", team="vision", role="root")
        assert bad_role.value.message == "role must be one of admin, member, viewer, not 'root'"
        assert [e.field for e in bad_role.value.errors] == ["role"]
        with pytest.raises(AlreadyExistsError, match="user 'ana' exists"):
            access.create_user(session, "ana", team="vision", role="member")
        with pytest.raises(InvalidRequestError) as no_user:
            access.create_token(session, "nobody")
        assert no_user.value.message == "no user 'nobody'"
        assert no_user.value.errors == (FieldIssue("user", "no such user"),)
        assert [u.name for u in access.list_users(session, team="vision")] == ["ana"]
        assert access.list_users(session, team="audio") == []


def test_a_token_is_shown_once_and_revoked_for_good(db_url: str) -> None:
    with session_scope(db_url) as session:
        access.create_team(session, "vision")
        access.create_user(session, "ana", team="vision", role="member")
        made = access.create_token(session, "ana", label="laptop")
        token_id = made.token.id
        assert made.secret.startswith("dst_") and made.token.created_at is not None
        assert made.secret not in made.token.token_hash
    with session_scope(db_url) as session:
        found = authenticate(session, made.secret)
        assert found is not None and found.caller.user == "ana"
        access.revoke_token(session, token_id)
        again = access.revoke_token(session, token_id)  # harmless
        assert again.revoked_at is not None
        with pytest.raises(NotFoundError) as missing:
            access.revoke_token(session, "nope")
        assert (missing.value.what, missing.value.ident) == ("token", "nope")
    with session_scope(db_url) as session:
        assert authenticate(session, made.secret) is None
        assert [(t.id, t.label) for t in access.list_tokens(session, user="ana")] == [(token_id, "laptop")]
        assert access.list_tokens(session, user="bo") == []


def test_bootstrap_makes_the_admin_once_and_a_token_each_time(db_url: str) -> None:
    with session_scope(db_url) as session:
        first = access.bootstrap_admin(session)
        second = access.bootstrap_admin(session, label="again")
    with session_scope(db_url) as session:
        callers = [authenticate(session, made.secret) for made in (first, second)]
        assert [c.caller.role if c else None for c in callers] == ["admin", "admin"]
        assert [u.name for u in access.list_users(session)] == ["admin"]
        assert [t.label for t in access.list_tokens(session)] == ["bootstrap", "again"]


def test_the_operator_session_migrates_a_new_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    with access.operator_session(url) as session:
        access.create_team(session, "vision")
    with access.operator_session(url) as session:
        assert [v.team.name for v in access.list_teams(session)] == ["vision"]

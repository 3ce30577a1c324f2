"""Authentication reads only; recording a token's use is one conditional write that a second
request within a minute does not repeat (so concurrent requests never queue on the row)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from store.db import session_scope
from store.identity import LAST_USED_EVERY, authenticate, create_team, create_token, create_user, mark_used
from store.models import ApiToken, utcnow


def _token(db_url: str) -> tuple[str, str]:
    with session_scope(db_url) as session:
        create_team(session, "t")
        create_user(session, "u", team="t", role="member")
        token, secret = create_token(session, "u")
        session.flush()
        return token.id, secret


def test_authenticate_writes_nothing(db_url: str) -> None:
    token_id, secret = _token(db_url)
    with session_scope(db_url) as session:
        found = authenticate(session, secret)
        assert found is not None and found.caller.user == "u" and found.caller.token_id == token_id
        assert found.last_used_at is None
        assert not session.dirty and not session.new
    with session_scope(db_url) as session:
        assert authenticate(session, "dst_unknown") is None


def test_mark_used_writes_once_a_minute(db_url: str) -> None:
    token_id, secret = _token(db_url)
    with session_scope(db_url) as session:
        assert mark_used(session, token_id)
    with session_scope(db_url) as session:
        assert not mark_used(session, token_id)  # a second request within the minute: no write
        found = authenticate(session, secret)
        assert found is not None and found.last_used_at is not None
        assert utcnow() - found.last_used_at < timedelta(seconds=30)
    with session_scope(db_url) as session:
        stale = utcnow() - LAST_USED_EVERY - timedelta(seconds=5)
        session.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=stale))
    with session_scope(db_url) as session:
        assert mark_used(session, token_id)

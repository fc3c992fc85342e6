"""State that used to sit in modules now has an owner per app, and the constants that must agree
are derived from one another."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from litestar.security.jwt import Token

from api.auth import VerifiedTokens, remembering
from api.live_versions import LiveVersions
from infra.settings import LIVE_VERSION_CACHE_S
from infra.views.operations import GRACE_S

SECRET = "s" * 40


def test_a_rebuild_keeps_the_old_version_for_longer_than_queries_trust_a_live_version() -> None:
    assert LiveVersions.ttl == LIVE_VERSION_CACHE_S
    assert LiveVersions.ttl < GRACE_S


def _token() -> str:
    return Token(sub=str(uuid.uuid4()), exp=datetime.now(UTC) + timedelta(minutes=5)).encode(SECRET, "HS256")


def test_each_auth_remembers_the_tokens_it_verified_and_no_other() -> None:
    first, second = VerifiedTokens(maxsize=2), VerifiedTokens()
    a, b = remembering(first), remembering(second)
    encoded = _token()
    decoded = a.decode(encoded, SECRET, "HS256")
    assert a.decode(encoded, SECRET, "HS256") is decoded, "a verified token is remembered"
    assert first.get((encoded, SECRET, "HS256")) is decoded
    assert second.get((encoded, SECRET, "HS256")) is None, "another app's auth does not know it"
    assert b.decode(encoded, SECRET, "HS256") is not decoded
    for _ in range(2):
        a.decode(_token(), SECRET, "HS256")
    assert first.get((encoded, SECRET, "HS256")) is None, "the oldest is forgotten beyond maxsize"

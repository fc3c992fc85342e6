"""The rules of users, email claims and sessions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from domain.errors import Conflict, Invalid
from domain.identity import EmailClaim, RefreshTokenReplayed, Role, Session, User, email_claim_id, normalize_email
from tests.unit.specs import given, raises

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def user() -> User:
    return User.register("Ada@Example.com", " Ada  Lovelace ", "$argon2id$hash")


def test_registering_normalizes_email_and_name_and_starts_as_member() -> None:
    u = user()
    assert (u.email, u.name, u.roles) == ("ada@example.com", "Ada Lovelace", {Role.MEMBER})
    for bad in ("", "ada", "ada@", "@example.com", "ada@example", "a da@example.com"):
        with raises(Invalid):
            User.register(bad, "Ada", "h")


def test_one_claim_per_email_whatever_its_case() -> None:
    assert email_claim_id("ADA@example.com ") == email_claim_id("ada@EXAMPLE.com")
    assert EmailClaim(email=normalize_email("Ada@Example.com"), user_id=uuid.uuid4()).id == email_claim_id(
        "ada@example.com"
    )


def test_roles() -> None:
    given(user()).when(lambda u: u.grant(Role.ADMIN)).then("RoleGranted", role=Role.ADMIN)
    given(user()).when(lambda u: u.grant(Role.MEMBER)).rejected(Conflict, "already has")
    given(user(), lambda u: u.grant(Role.AUDITOR)).when(lambda u: u.revoke(Role.AUDITOR)).then("RoleRevoked")
    given(user()).when(lambda u: u.revoke(Role.MANAGER)).rejected(Conflict, "does not have")
    given(user()).when(lambda u: u.revoke(Role.MEMBER)).rejected(Invalid, field="role")


def session(ends_at: datetime = NOW + timedelta(days=30), epoch: int = 0) -> Session:
    return Session(
        user_id=uuid.uuid4(), token_digest="d1", expires_at=NOW + timedelta(days=1), ends_at=ends_at, epoch=epoch
    )


def test_refresh_tokens_rotate_and_die() -> None:
    given(session()).when(lambda s: s.rotate("d1", "d2", NOW + timedelta(days=2), NOW)).then(
        "Rotated", token_digest="d2"
    )
    given(session(), lambda s: s.rotate("d1", "d2", NOW + timedelta(days=2), NOW)).when(
        lambda s: s.rotate("d1", "d3", NOW + timedelta(days=2), NOW)
    ).rejected(RefreshTokenReplayed, "already been used")
    given(session()).when(lambda s: s.rotate("d9", "d2", NOW + timedelta(days=2), NOW)).rejected(Conflict, "not this")
    given(session()).when(lambda s: s.rotate("d1", "d2", NOW, NOW + timedelta(days=3))).rejected(Conflict, "expired")
    given(session(), lambda s: s.end("logout")).when(lambda s: s.rotate("d1", "d2", NOW, NOW)).rejected(
        Conflict, "ended"
    )
    given(session()).when(lambda s: s.end("logout")).then("Ended")
    given(session(), lambda s: s.end("logout")).when(lambda s: s.end("logout")).rejected(Conflict)


def test_a_reused_refresh_token_ends_the_session_with_a_record_of_it() -> None:
    given(session()).when(lambda s: s.refresh_token_reused()).then("RefreshTokenReused")
    given(session(), lambda s: s.refresh_token_reused()).when(lambda s: s.rotate("d1", "d2", NOW, NOW)).rejected(
        Conflict, "ended"
    )


def test_rotation_never_extends_a_session_past_its_absolute_end() -> None:
    ends = NOW + timedelta(hours=2)
    given(session(ends_at=ends)).when(lambda s: s.rotate("d1", "d2", NOW + timedelta(days=14), NOW)).then(
        "Rotated", expires_at=ends
    )
    given(session(ends_at=ends)).when(lambda s: s.rotate("d1", "d2", ends, ends)).rejected(Conflict, "expired")


def test_changing_the_password_moves_the_user_to_a_new_epoch_and_the_session_with_it() -> None:
    u = user()
    u.change_password("$argon2id$new")
    assert (u.credential_epoch, u.password_hash) == (1, "$argon2id$new")
    u.change_password_hash("$argon2id$rehashed")
    assert u.credential_epoch == 1, "a rehash of the same password is not a change"
    given(session()).when(lambda s: s.reauthenticate(1)).then("Reauthenticated", epoch=1)
    given(session(), lambda s: s.end("logout")).when(lambda s: s.reauthenticate(1)).rejected(Conflict, "ended")

"""Identity: users, their roles, and login sessions.

Rules live here; hashing passwords and signing tokens do not (they are the commands layer's
work). Stored event names are a contract with auditors: rename only with an alias.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from eventsourcing.domain import Aggregate, event

from domain.errors import Conflict, Invalid
from domain.text import check_text

EMAIL_NAMESPACE = uuid.UUID("9f3e1c52-6a0b-4e1f-a7d2-0c5b8e4f1a11")
SESSION_NAMESPACE = uuid.UUID("2b7c4d90-1e8f-4a35-b6c2-7d9e0f1a2b33")
MAX_NAME = 120
SECRET_FIELDS = frozenset({"password_hash"})
"""Event fields that never leave the event store: redacted in published events and audit views."""
SUBJECT = "originator_id"
"""In an event's `personal_data`: the data subject is the aggregate itself."""
MAX_EMAIL = 254


class Role(StrEnum):
    MEMBER = "member"
    MANAGER = "manager"
    AUDITOR = "auditor"
    ADMIN = "admin"


def normalize_email(email: str) -> str:
    """Emails are unique case-insensitively: compare and key them in this form."""
    normalized = email.strip().lower()
    local, at, domain = normalized.partition("@")
    if (
        not at
        or not local
        or "." not in domain
        or not normalized.isprintable()
        or " " in normalized
        or len(normalized) > MAX_EMAIL
    ):
        raise Invalid(f"{email!r} is not an email address", field="email")
    return normalized


def clean_name(name: str, *, field: str = "name", limit: int = MAX_NAME) -> str:
    cleaned = check_text(" ".join(name.split()), field)
    if not cleaned:
        raise Invalid(f"{field} must not be blank", field=field)
    if len(cleaned) > limit:
        raise Invalid(f"{field} must be at most {limit} characters", field=field)
    return cleaned


class User(Aggregate):
    """A person who can log in. Starts as a member; admins grant and revoke other roles."""

    class Registered(Aggregate.Created):
        """`personal_data` (on any event): its fields that are a person's data, each with the event
        field naming that person (the data subject); stored encrypted with the subject's key, so
        destroying the key erases them (infra.eventstore.personal)."""

        personal_data: ClassVar[dict[str, str]] = {"email": SUBJECT, "name": SUBJECT}
        email: str
        name: str
        password_hash: str

    @event(Registered)
    def __init__(self, email: str | None, name: str | None, password_hash: str) -> None:
        self.email = email
        self.name = name
        self.password_hash = password_hash
        self.roles: set[Role] = {Role.MEMBER}
        self.erased = False
        self.credential_epoch = 0
        """Counts password changes: a session started (or re-authenticated) under an older epoch is
        over (see `Session.epoch`)."""

    @classmethod
    def register(cls, email: str, name: str, password_hash: str) -> User:
        return cls(normalize_email(email), clean_name(name), password_hash)

    def grant(self, role: Role) -> None:
        if role in self.roles:
            raise Conflict(f"user already has the role {role.value}")
        self._role_granted(role=role)

    class RoleGranted(Aggregate.Event):
        role: Role

    @event(RoleGranted)
    def _role_granted(self, role: Role) -> None:
        self.roles.add(Role(role))

    def revoke(self, role: Role) -> None:
        if role is Role.MEMBER:
            raise Invalid("the member role cannot be revoked", field="role")
        if role not in self.roles:
            raise Conflict(f"user does not have the role {role.value}")
        self._role_revoked(role=role)

    class RoleRevoked(Aggregate.Event):
        role: Role

    @event(RoleRevoked)
    def _role_revoked(self, role: Role) -> None:
        self.roles.discard(Role(role))

    def change_password_hash(self, password_hash: str) -> None:
        """A stronger hash of the same password (rehash on login) or a new password."""
        self._password_hash_changed(password_hash=password_hash)

    class PasswordHashChanged(Aggregate.Event):
        password_hash: str

    @event(PasswordHashChanged)
    def _password_hash_changed(self, password_hash: str) -> None:
        self.password_hash = password_hash

    def change_password(self, password_hash: str) -> None:
        """A new password chosen by the user: every session started before it is over, but the one
        that changed it (see `Session.reauthenticate`)."""
        self._password_changed(password_hash=password_hash)

    class PasswordChanged(Aggregate.Event):
        password_hash: str

    @event(PasswordChanged)
    def _password_changed(self, password_hash: str) -> None:
        self.password_hash = password_hash
        self.credential_epoch += 1

    def erase(self) -> None:
        """Erasure: the person's data is gone (their key is destroyed); the user stays, as erased."""
        if self.erased:
            raise Conflict("the user has already been erased")
        self._erased()

    class Erased(Aggregate.Event):
        pass

    @event(Erased)
    def _erased(self) -> None:
        self.email = None
        self.name = None
        self.erased = True


class EmailClaim(Aggregate):
    """One per registered email, keyed by the normalized email: a second registration of the same
    address collides on this stream's first version, in the same append as the user it creates."""

    @staticmethod
    def create_id(email: str, **_: Any) -> uuid.UUID:
        return email_claim_id(email)

    class Claimed(Aggregate.Created):
        personal_data: ClassVar[dict[str, str]] = {"email": "user_id"}
        email: str
        user_id: uuid.UUID

    @event(Claimed)
    def __init__(self, email: str | None, user_id: uuid.UUID) -> None:
        self.email = email
        self.user_id: uuid.UUID | None = user_id

    def release(self) -> None:
        """The user it belonged to was erased: the address may be registered again."""
        self._released()

    class Released(Aggregate.Event):
        pass

    @event(Released)
    def _released(self) -> None:
        self.email = None
        self.user_id = None

    def reclaim(self, email: str, user_id: uuid.UUID) -> None:
        if self.user_id is not None:
            raise Conflict("an account with that email already exists")
        self._reclaimed(email=email, user_id=user_id)

    class Reclaimed(Aggregate.Event):
        personal_data: ClassVar[dict[str, str]] = {"email": "user_id"}
        email: str
        user_id: uuid.UUID

    @event(Reclaimed)
    def _reclaimed(self, email: str, user_id: uuid.UUID) -> None:
        self.email = email
        self.user_id = user_id


def email_claim_id(email: str) -> uuid.UUID:
    return uuid.uuid5(EMAIL_NAMESPACE, normalize_email(email))


class RefreshTokenReplayed(Conflict):
    """A refresh token that was already rotated away was presented again: someone holds a copy."""


class Session(Aggregate):
    """A login session. Its refresh token rotates on every use; a used token is dead, and presenting
    a used token again ends the session (whoever holds a copy and the owner alike).

    Only digests of refresh tokens are kept: whoever presents a token whose digest is the current
    one may refresh once, and the session then expects the next token. The session ends for good at
    `ends_at` (its absolute lifetime, which rotation never extends) and when its user's password
    changes in another session (`epoch` below the user's `credential_epoch`).
    """

    class Started(Aggregate.Created):
        """Version 1 had no `ends_at` and `epoch`: such a session ends when its refresh token of the
        time expired, and belongs to epoch 0."""

        user_id: uuid.UUID
        token_digest: str
        expires_at: datetime
        ends_at: datetime
        epoch: int

        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["ends_at"] = state["expires_at"]
            state["epoch"] = 0

    @event(Started)
    def __init__(
        self, user_id: uuid.UUID, token_digest: str, expires_at: datetime, ends_at: datetime, epoch: int
    ) -> None:
        self.user_id = user_id
        self.token_digest = token_digest
        self.expires_at = min(expires_at, ends_at)
        self.ends_at = ends_at
        self.epoch = epoch
        self.used_digests: set[str] = set()
        self.ended = False

    def check_usable(self, token_digest: str, now: datetime) -> None:
        if self.ended:
            raise Conflict("the session has ended")
        if token_digest in self.used_digests:
            raise RefreshTokenReplayed("the refresh token has already been used")
        if token_digest != self.token_digest:
            raise Conflict("the refresh token is not this session's")
        if now >= self.expires_at:
            raise Conflict("the refresh token has expired")

    def rotate(self, presented_digest: str, next_digest: str, expires_at: datetime, now: datetime) -> None:
        self.check_usable(presented_digest, now)
        self._rotated(token_digest=next_digest, expires_at=min(expires_at, self.ends_at))

    class Rotated(Aggregate.Event):
        token_digest: str
        expires_at: datetime

    @event(Rotated)
    def _rotated(self, token_digest: str, expires_at: datetime) -> None:
        self.used_digests.add(self.token_digest)
        self.token_digest = token_digest
        self.expires_at = expires_at

    def end(self, reason: str) -> None:
        if self.ended:
            raise Conflict("the session has already ended")
        self._ended(reason=reason)

    class Ended(Aggregate.Event):
        reason: str

    @event(Ended)
    def _ended(self, reason: str) -> None:
        self.ended = True

    def refresh_token_reused(self) -> None:
        """Ends the session: a used refresh token came back, so a copy of it is out there. The event
        is the security record of it (it names the session, and through it the user)."""
        if self.ended:
            raise Conflict("the session has already ended")
        self._refresh_token_reused()

    class RefreshTokenReused(Aggregate.Event):
        pass

    @event(RefreshTokenReused)
    def _refresh_token_reused(self) -> None:
        self.ended = True

    def reauthenticate(self, epoch: int) -> None:
        """The user proved their password in this session (changing it): the session lives on
        into the new epoch while every other session of the user ends."""
        if self.ended:
            raise Conflict("the session has ended")
        self._reauthenticated(epoch=epoch)

    class Reauthenticated(Aggregate.Event):
        epoch: int

    @event(Reauthenticated)
    def _reauthenticated(self, epoch: int) -> None:
        self.epoch = epoch

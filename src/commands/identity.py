"""Identity's write side: register, log in, rotate refresh tokens, log out, grant and revoke roles."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate
from pwdlib import PasswordHash

from commands.base import (
    ChronicleApplication,
    CommandResult,
    ConcurrentUpdate,
    Context,
    FactoryMaker,
    KeyRecorded,
    check_version,
    command,
)
from domain.errors import Conflict, Forbidden, Invalid, NotFound
from domain.identity import EmailClaim, Role, Session, User, email_claim_id, normalize_email

MIN_PASSWORD = 8
MAX_PASSWORD = 1024


class EmailTaken(ConcurrentUpdate):
    """The email is registered already (perhaps by an identical request a moment ago)."""


class Unauthorized(Exception):
    """Bad credentials or a dead refresh token. Deliberately vague: it never says which."""


@dataclass(frozen=True)
class LoginResult:
    user_id: uuid.UUID
    roles: frozenset[Role]
    session_id: uuid.UUID
    refresh_token: str


class IdentityApplication(ChronicleApplication):
    name = "identity"

    def __init__(
        self,
        make_factory: FactoryMaker,
        *,
        hasher: PasswordHash | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        refresh_ttl: timedelta = timedelta(days=14),
        key_recorded: KeyRecorded | None = None,
        forget: Callable[[uuid.UUID], None] = lambda subject: None,
    ) -> None:
        super().__init__(make_factory, key_recorded=key_recorded)
        self.forget = forget
        """Destroys a data subject's key (infra.eventstore.personal.SubjectKeys.erase)."""
        self.hasher = hasher or PasswordHash.recommended()
        self.clock = clock
        self.refresh_ttl = refresh_ttl
        self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(16))

    def register(self, ctx: Context, email: str, name: str, password: str) -> CommandResult:
        """The address is claimed in the same append; an address whose user was erased is claimed
        again (its claim stream goes on)."""
        check_password(password)
        password_hash = self.hasher.hash(password)
        user = User.register(email, name, password_hash)
        normalized = normalize_email(email)
        try:
            return self.record(ctx, user, EmailClaim(email=normalized, user_id=user.id), result_of=user)
        except ConcurrentUpdate:
            pass
        user = User.register(email, name, password_hash)  # the failed append took the first one's events
        try:
            claim = self.load(EmailClaim, email_claim_id(normalized), "email claim", fresh=True)
            claim.reclaim(normalized, user.id)
            return self.record(ctx, user, claim, result_of=user)
        except (Conflict, ConcurrentUpdate, NotFound):
            raise EmailTaken("an account with that email already exists", field="email") from None

    def erase(self, ctx: Context, user_id: uuid.UUID) -> CommandResult:
        """Erases a person (the user themselves, or an admin): `User.Erased` and the release of
        their address are appended, then their key is destroyed, so every event that carried their
        data keeps its bytes (and verifies) but opens to nothing. Repeating it after a failure
        finishes the job."""
        actor = ctx.authenticated() if ctx.system_actor is None else None
        if actor is not None and actor.user_id != user_id and Role.ADMIN not in actor.roles:
            raise Forbidden("only the user themselves or an admin may erase a user")
        user = self.user(user_id, fresh=True)
        if user.erased:
            self.forget(user_id)
            raise Conflict("the user has already been erased")
        changed: list[Aggregate] = [user]
        if user.email is not None:
            claim = self.load(EmailClaim, email_claim_id(user.email), "email claim", fresh=True)
            if claim.user_id == user_id:
                claim.release()
                changed.append(claim)
        user.erase()
        result = self.record(ctx, *changed, result_of=user)
        self.forget(user_id)
        self.cache.evict(user_id)
        return result

    def user(self, user_id: uuid.UUID, *, fresh: bool = False) -> User:
        return self.load(User, user_id, "user", fresh=fresh)

    def user_exists(self, user_id: uuid.UUID) -> bool:
        return self.exists(User, user_id)

    def find_by_email(self, email: str) -> User | None:
        try:
            claim: Aggregate = self.repository.get(email_claim_id(email))
        except (AggregateNotFoundError, Invalid):
            return None
        if not isinstance(claim, EmailClaim) or claim.user_id is None:
            return None
        return self.user(claim.user_id, fresh=True)

    def login(self, ctx: Context, email: str, password: str) -> LoginResult:
        user = self.find_by_email(email)
        if user is None:
            self.hasher.verify(password, self._dummy_hash)  # the same work whether or not the user exists
            raise Unauthorized
        valid, rehashed = self.hasher.verify_and_update(password, user.password_hash)
        if not valid:
            raise Unauthorized
        if rehashed:
            user.change_password_hash(rehashed)
        token, digest = new_refresh_token()
        session = Session(user_id=user.id, token_digest=digest, expires_at=self.clock() + self.refresh_ttl)
        self.record(ctx, user, session, result_of=session)
        return LoginResult(user.id, frozenset(user.roles), session.id, f"{session.id.hex}.{token}")

    def refresh(self, ctx: Context, refresh_token: str) -> LoginResult:
        """Rotates the session's refresh token; the one presented is dead from now on. Two refreshes
        with the same token race on the session's next version: exactly one wins."""
        session = self._session_of(refresh_token)
        token, digest = new_refresh_token()
        now = self.clock()
        try:
            session.rotate(_digest_of(refresh_token), digest, now + self.refresh_ttl, now)
            self.record(ctx, session, result_of=session)
        except (Conflict, ConcurrentUpdate):
            raise Unauthorized from None
        user = self.user(session.user_id, fresh=True)
        return LoginResult(user.id, frozenset(user.roles), session.id, f"{session.id.hex}.{token}")

    def logout(self, ctx: Context, session_id: uuid.UUID) -> CommandResult:
        session = self.load(Session, session_id, "session", fresh=True)
        if ctx.actor is None or session.user_id != ctx.actor.user_id:
            raise Forbidden("that session is not yours")
        if not session.ended:
            session.end("logout")
        return self.record(ctx, session, result_of=session)

    @command
    def grant(self, ctx: Context, user_id: uuid.UUID, role: Role, expected_version: int | None = None) -> CommandResult:
        user = self.user(user_id)
        check_version(user, expected_version)
        user.grant(role)
        return self.record(ctx, user, result_of=user)

    @command
    def revoke(
        self, ctx: Context, user_id: uuid.UUID, role: Role, expected_version: int | None = None
    ) -> CommandResult:
        user = self.user(user_id)
        check_version(user, expected_version)
        user.revoke(role)
        return self.record(ctx, user, result_of=user)

    def _session_of(self, refresh_token: str) -> Session:
        """Always read fresh: a stale session would refuse the token that is current now."""
        head, _, _ = refresh_token.partition(".")
        try:
            return self.load(Session, uuid.UUID(hex=head), "session", fresh=True)
        except (ValueError, NotFound):
            raise Unauthorized from None


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise Invalid(f"password must be at least {MIN_PASSWORD} characters", field="password")
    if len(password) > MAX_PASSWORD:
        raise Invalid(f"password must be at most {MAX_PASSWORD} characters", field="password")


def new_refresh_token() -> tuple[str, str]:
    """A fresh secret and its digest; only the digest is stored."""
    token = secrets.token_urlsafe(32)
    return token, _digest(token)


def _digest_of(refresh_token: str) -> str:
    return _digest(refresh_token.partition(".")[2])


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()

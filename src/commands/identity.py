"""Identity's write side: register, log in, rotate refresh tokens, log out, change the password,
grant and revoke roles; and the access states that requests check (see `AccessStates`)."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

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
from domain.identity import EmailClaim, RefreshTokenReplayed, Role, Session, User, email_claim_id, normalize_email

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


@dataclass(frozen=True)
class UserAccess:
    """What a request needs of its user: the roles it has now, and the epoch its session must be in."""

    user_id: uuid.UUID
    version: int
    epoch: int
    roles: frozenset[Role]


@dataclass(frozen=True)
class SessionAccess:
    session_id: uuid.UUID
    version: int
    user_id: uuid.UUID
    epoch: int
    ended: bool


class AccessStates(Protocol):
    """Where every request looks up its session and user (infra.sessions: Redis). A command that
    changes them holds them first (raising if it cannot: then nothing may be appended), then
    publishes the new states, or releases the hold if it stored nothing. `fill` offers a state
    nobody is changing (a new session). `publish`, `release` and `fill` never raise."""

    def hold(self, users: Sequence[uuid.UUID], sessions: Sequence[uuid.UUID]) -> None: ...

    def release(self, users: Sequence[uuid.UUID], sessions: Sequence[uuid.UUID]) -> None: ...

    def publish(self, users: Sequence[UserAccess], sessions: Sequence[SessionAccess]) -> None: ...

    def fill(self, users: Sequence[UserAccess], sessions: Sequence[SessionAccess]) -> None: ...


class NoAccessStates:
    """For a write side without Redis (unit tests): requests then always read the event store."""

    def hold(self, users: Sequence[uuid.UUID], sessions: Sequence[uuid.UUID]) -> None:
        pass

    def release(self, users: Sequence[uuid.UUID], sessions: Sequence[uuid.UUID]) -> None:
        pass

    def publish(self, users: Sequence[UserAccess], sessions: Sequence[SessionAccess]) -> None:
        pass

    def fill(self, users: Sequence[UserAccess], sessions: Sequence[SessionAccess]) -> None:
        pass


def user_access(user: User) -> UserAccess:
    return UserAccess(user.id, user.version, user.credential_epoch, frozenset(user.roles))


def session_access(session: Session) -> SessionAccess:
    return SessionAccess(session.id, session.version, session.user_id, session.epoch, session.ended)


class IdentityApplication(ChronicleApplication):
    name = "identity"

    def __init__(
        self,
        make_factory: FactoryMaker,
        *,
        hasher: PasswordHash | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        refresh_ttl: timedelta = timedelta(days=14),
        session_max_age: timedelta = timedelta(days=30),
        key_recorded: KeyRecorded | None = None,
        access_states: AccessStates | None = None,
        forget: Callable[[uuid.UUID], None] = lambda subject: None,
    ) -> None:
        super().__init__(make_factory, key_recorded=key_recorded)
        self.forget = forget
        """Destroys a data subject's key (infra.eventstore.personal.SubjectKeys.erase)."""
        self.hasher = hasher or PasswordHash.recommended()
        self.clock = clock
        self.refresh_ttl = refresh_ttl
        self.session_max_age = session_max_age
        self.access_states: AccessStates = access_states or NoAccessStates()
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
        now = self.clock()
        session = Session(
            user_id=user.id,
            token_digest=digest,
            expires_at=now + self.refresh_ttl,
            ends_at=now + self.session_max_age,
            epoch=user.credential_epoch,
        )
        self.record(ctx, user, session, result_of=session)
        self.access_states.fill([user_access(user)], [session_access(session)])
        return LoginResult(user.id, frozenset(user.roles), session.id, f"{session.id.hex}.{token}")

    def refresh(self, ctx: Context, refresh_token: str, attempts: int = 3) -> LoginResult:
        """Rotates the session's refresh token; the one presented is dead from now on, and presenting
        it again ends the session (`Session.RefreshTokenReused`). Two refreshes with the same token
        race on the session's next version: exactly one wins; the other, decided again, is a reuse."""
        presented = _digest_of(refresh_token)
        for _ in range(attempts):
            session = self._session_of(refresh_token)
            user = self.user(session.user_id, fresh=True)
            token, digest = new_refresh_token()
            now = self.clock()
            try:
                if session.epoch < user.credential_epoch:
                    raise Conflict("the password changed in another session")
                session.rotate(presented, digest, now + self.refresh_ttl, now)
                self.record(ctx, session, result_of=session)
            except RefreshTokenReplayed:
                self._end_replayed(ctx, session.id)
                raise Unauthorized from None
            except ConcurrentUpdate:
                continue
            except Conflict:
                raise Unauthorized from None
            return LoginResult(user.id, frozenset(user.roles), session.id, f"{session.id.hex}.{token}")
        raise Unauthorized

    def _end_replayed(self, ctx: Context, session_id: uuid.UUID, attempts: int = 3) -> None:
        """Ends a session whose used refresh token came back (unless another request ended it first)."""
        for _ in range(attempts):
            session = self.load(Session, session_id, "session", fresh=True)
            if session.ended:
                return
            session.refresh_token_reused()
            try:
                self._record_access(ctx, session, result_of=session, sessions=[session])
                return
            except ConcurrentUpdate:
                continue
        raise ConcurrentUpdate("the session kept changing while it was being ended")

    def logout(self, ctx: Context, session_id: uuid.UUID) -> CommandResult:
        session = self.load(Session, session_id, "session", fresh=True)
        if ctx.actor is None or session.user_id != ctx.actor.user_id:
            raise Forbidden("that session is not yours")
        if not session.ended:
            session.end("logout")
        return self._record_access(ctx, session, result_of=session, sessions=[session])

    def change_password(
        self, ctx: Context, session_id: uuid.UUID, current_password: str, new_password: str
    ) -> CommandResult:
        """Ends every session of the user but `session_id` (they are of an older epoch now)."""
        check_password(new_password, field="new_password")
        user = self.user(ctx.authenticated().user_id, fresh=True)
        if not self.hasher.verify(current_password, user.password_hash):
            raise Forbidden("the current password is wrong")
        session = self.load(Session, session_id, "session", fresh=True)
        if session.user_id != user.id:
            raise Forbidden("that session is not yours")
        user.change_password(self.hasher.hash(new_password))
        session.reauthenticate(user.credential_epoch)
        return self._record_access(ctx, user, session, result_of=user, users=[user], sessions=[session])

    @command
    def grant(self, ctx: Context, user_id: uuid.UUID, role: Role, expected_version: int | None = None) -> CommandResult:
        user = self.user(user_id)
        check_version(user, expected_version)
        user.grant(role)
        return self._record_access(ctx, user, result_of=user, users=[user])

    @command
    def revoke(
        self, ctx: Context, user_id: uuid.UUID, role: Role, expected_version: int | None = None
    ) -> CommandResult:
        user = self.user(user_id)
        check_version(user, expected_version)
        user.revoke(role)
        return self._record_access(ctx, user, result_of=user, users=[user])

    def _record_access(
        self,
        ctx: Context,
        *aggregates: User | Session,
        result_of: User | Session,
        users: Sequence[User] = (),
        sessions: Sequence[Session] = (),
    ) -> CommandResult:
        """Records a change of what requests check: holds their access states first, so that no
        request trusts the old ones from the moment the change may be stored."""
        user_ids, session_ids = [u.id for u in users], [s.id for s in sessions]
        self.access_states.hold(user_ids, session_ids)
        try:
            result = self.record(ctx, *aggregates, result_of=result_of)
        except BaseException:
            self.access_states.release(user_ids, session_ids)
            raise
        self.access_states.publish([user_access(u) for u in users], [session_access(s) for s in sessions])
        return result

    def user_access(self, user_id: uuid.UUID) -> UserAccess | None:
        """From the event store (requests use it when Redis has no state or does not answer)."""
        try:
            return user_access(self.load(User, user_id, "user", for_update=False, fresh=True))
        except NotFound:
            return None

    def session_access(self, session_id: uuid.UUID) -> SessionAccess | None:
        try:
            return session_access(self.load(Session, session_id, "session", for_update=False, fresh=True))
        except NotFound:
            return None

    def _session_of(self, refresh_token: str) -> Session:
        """Always read fresh: a stale session would refuse the token that is current now."""
        head, _, _ = refresh_token.partition(".")
        try:
            return self.load(Session, uuid.UUID(hex=head), "session", fresh=True)
        except (ValueError, NotFound):
            raise Unauthorized from None


def check_password(password: str, field: str = "password") -> None:
    if len(password) < MIN_PASSWORD:
        raise Invalid(f"{field} must be at least {MIN_PASSWORD} characters", field=field)
    if len(password) > MAX_PASSWORD:
        raise Invalid(f"{field} must be at most {MAX_PASSWORD} characters", field=field)


def new_refresh_token() -> tuple[str, str]:
    """A fresh secret and its digest; only the digest is stored."""
    token = secrets.token_urlsafe(32)
    return token, _digest(token)


def _digest_of(refresh_token: str) -> str:
    return _digest(refresh_token.partition(".")[2])


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()

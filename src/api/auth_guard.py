"""Login brute force and the record of refused authentications, both in Redis.

**Lockout.** Each account (by its normalized email, hashed) has a count of attempts since its last
successful login. An attempt is counted when it starts, in the same script that checks the lock, so
a thousand attempts sent at once cannot all slip in before the tenth failure is written. From the
`after`-th attempt on, each one locks the account for `base` seconds, doubling with every attempt
after that (capped at `max`); while locked, attempts are refused before the password is looked
at, from every address. A successful login deletes the count. Counts are forgotten a day after the
last attempt. Redis' own clock decides, so several API hosts agree.

**Failures.** Refused logins, registrations and refreshes are appended to a capped Redis stream
(`<namespace>:security:auth_failures`, the newest 100,000) with the time, the route, who (an email,
or a refresh token's session id: never a password or a token), the client address and why. Admins
read it at `GET /v1/admin/auth-failures`.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import msgspec
import redis.asyncio as aioredis
import redis.exceptions
from litestar import Request
from litestar.exceptions import HTTPException, TooManyRequestsException

from commands.identity import Unauthorized
from domain.errors import DomainError
from domain.identity import normalize_email
from infra.observe.metrics import RATE_LIMIT_REFUSALS
from infra.settings import Settings

log = logging.getLogger(__name__)
FAILURES_KEPT = 100_000
FORGET_AFTER_MS = 24 * 3600 * 1000

# Both scripts: KEYS[1] the account's hash; ARGV after, base_ms, max_ms, forget_ms.
_LOCK = """
local function lock(attempts, now)
  local after = tonumber(ARGV[1])
  if attempts >= after then
    local period = math.min(tonumber(ARGV[2]) * 2 ^ (attempts - after), tonumber(ARGV[3]))
    redis.call('HSET', KEYS[1], 'locked_until', string.format('%d', now + math.floor(period)))
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
_BEGIN = (
    _LOCK
    + """
local locked = tonumber(redis.call('HGET', KEYS[1], 'locked_until') or '0')
if locked > now then return locked - now end
lock(redis.call('HINCRBY', KEYS[1], 'attempts', 1), now)
return 0
"""
)
# The lock runs from the failure, not from the start of the attempt (hashing takes a while).
_FAILED = (
    _LOCK
    + """
lock(tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0'), now)
return 0
"""
)


class AuthFailure(msgspec.Struct):
    id: str
    at: datetime
    route: str
    who: str
    address: str
    reason: str


class AuthGuard:
    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self.redis, self.settings = redis, settings
        self.stream = f"{settings.namespace}:security:auth_failures"
        self._begin = redis.register_script(_BEGIN)
        self._failed = redis.register_script(_FAILED)

    def _account_key(self, email: str) -> str:
        digest = hashlib.sha256(normalize_email(email).encode()).hexdigest()
        return f"{self.settings.namespace}:login:{digest}"

    async def begin_login(self, email: str) -> None:
        """Counts an attempt on the account, or refuses it (429) while the account is locked."""
        locked_ms = int(await self._begin(keys=[self._account_key(email)], args=self._lock_args()))
        if locked_ms > 0:
            RATE_LIMIT_REFUSALS.labels("login_lockout").inc()
            raise AccountLocked(math.ceil(locked_ms / 1000))

    async def login_failed(self, email: str) -> None:
        await self._failed(keys=[self._account_key(email)], args=self._lock_args())

    def _lock_args(self) -> list[int]:
        s = self.settings
        return [s.login_lockout_after, s.login_lockout_s * 1000, s.login_lockout_max_s * 1000, FORGET_AFTER_MS]

    async def not_an_attempt(self, email: str) -> None:
        """Takes back the count of an attempt that failed for want of a server, not of a password."""
        try:
            await self.redis.hincrby(self._account_key(email), "attempts", -1)
        except redis.exceptions.RedisError as e:
            log.warning("could not take back a login attempt: %s", e)

    async def login_succeeded(self, email: str) -> None:
        await self.redis.delete(self._account_key(email))

    async def record(self, request: Request[Any, Any, Any], route: str, who: str, reason: str) -> None:
        address = request.client.host if request.client else "unknown"
        fields = {"at": datetime.now(UTC).isoformat(), "route": route, "who": who, "address": address, "reason": reason}
        log.warning("refused %s for %r from %s: %s", route, who, address, reason)
        try:
            await self.redis.xadd(self.stream, fields, maxlen=FAILURES_KEPT, approximate=True)  # type: ignore[arg-type]  # redis-py types the field mapping invariantly
        except redis.exceptions.RedisError as e:  # the log line above still has it; the refusal stands
            log.warning("could not record that refusal in Redis: %s", e)

    async def failures(self, limit: int, before: str | None) -> tuple[list[AuthFailure], str | None]:
        """The newest first; `before` is the id of the last one of the previous page."""
        rows = await self.redis.xrevrange(self.stream, max=f"({before}" if before else "+", min="-", count=limit + 1)
        rows = rows or []
        items = [_failure(entry_id, fields or {}) for entry_id, fields in rows[:limit]]
        return items, items[-1].id if len(rows) > limit else None

    @asynccontextmanager
    async def login(self, request: Request[Any, Any, Any], route: str, email: str) -> AsyncIterator[None]:
        """One login attempt on `email`, run inside: refused at once while the account is locked
        (AccountLocked, a 429), counted, recorded if refused, and clearing the count if it succeeds."""
        async with self.recording(request, route, email):
            await self.begin_login(email)
            try:
                yield
            except Unauthorized:
                await self.login_failed(email)
                raise
            except Exception:
                await self.not_an_attempt(email)  # a server failed, not the caller
                raise
        await self.login_succeeded(email)

    @asynccontextmanager
    async def recording(self, request: Request[Any, Any, Any], route: str, who: str) -> AsyncIterator[None]:
        """Records the refusal of what runs inside, then lets it propagate."""
        try:
            yield
        except AccountLocked:
            await self.record(request, route, who, "account locked after repeated failures")
            raise
        except Unauthorized:
            await self.record(
                request, route, who, "invalid credentials" if route != "refresh" else "dead refresh token"
            )
            raise
        except (DomainError, HTTPException) as e:
            await self.record(request, route, who, str(getattr(e, "reason", None) or getattr(e, "detail", e)))
            raise


class AccountLocked(TooManyRequestsException):
    def __init__(self, retry_after: int) -> None:
        super().__init__(
            detail="too many failed logins for this account; retry later",
            headers={"Retry-After": str(max(1, retry_after))},
        )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _failure(entry_id: Any, fields: dict[Any, Any]) -> AuthFailure:
    f = {_text(k): _text(v) for k, v in fields.items()}
    return AuthFailure(
        id=_text(entry_id),
        at=datetime.fromisoformat(f["at"]),
        route=f["route"],
        who=f["who"],
        address=f["address"],
        reason=f["reason"],
    )

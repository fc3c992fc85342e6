"""The per-request access check: is the token's session alive, and what roles has its user now.

One Redis round trip (an MGET of the user's and the session's state, see infra.sessions, in one
script with the request's count when a per-user rate limit applies, see api.limits); a state
Redis lacks is read from the event store and filled in; when Redis does not answer, both are read
from the event store. So a logout, a reused refresh token, a password change or a role change
reaches every access token of that session or user on its next request.

The check has its own Redis client that fails fast (one retry, short timeouts), and after a failure
it reads the event store alone for `SKIP_REDIS_S`, so an outage costs requests a PostgreSQL read
each, not a wait for Redis each.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import redis.asyncio as aioredis
from litestar.exceptions import NotAuthorizedException
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from api.limits import hit_script
from commands.base import Actor
from commands.identity import IdentityApplication, SessionAccess, UserAccess
from infra.sessions import STORE, decode_session, decode_user, key_of, session_key, store_args, user_key

log = logging.getLogger(__name__)
Run = Callable[..., Awaitable[Any]]
READ_AND_COUNT = (
    hit_script("KEYS[3]", "ARGV[1]") + "return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2]), n, ttl}\n"
)
"""The user's and the session's states (KEYS[1], KEYS[2]) and, counted in the same script, the
request in a rate-limit window (KEYS[3], ARGV[1] ms): the MGET and the limit's count at once."""


class Count(Protocol):
    """A rate-limit window to count the request in (api.limits.CountAhead for one request)."""

    @property
    def key(self) -> str: ...

    @property
    def window_s(self) -> int: ...

    def counted(self, count: int, reset_in: float) -> None: ...


SKIP_REDIS_S = 1.0
TIMEOUT_S = 1.0


class AccessCheck:
    def __init__(self, redis_url: str, namespace: str, identity: IdentityApplication, run: Run) -> None:
        # No socket timeout: redis-py would wrap every send in `asyncio.wait_for` (a task per
        # command, about a twentieth of a cached query's time); each check is bounded as a whole
        # by `asyncio.timeout` instead, which costs a timer.
        self.redis = aioredis.from_url(
            redis_url, socket_timeout=None, socket_connect_timeout=TIMEOUT_S, retry=Retry(NoBackoff(), 1)
        )
        self.namespace = namespace
        self.identity = identity
        self.run = run
        self.store = self.redis.register_script(STORE)
        self.read_and_count = self.redis.register_script(READ_AND_COUNT)
        self._skip_redis_until = 0.0

    async def close(self) -> None:
        await self.redis.aclose()

    async def actor(self, user_id: uuid.UUID, session_id: uuid.UUID, count: Count | None = None) -> Actor:
        """With `count`, also counts the request in that rate-limit window, in the same round trip
        (api.limits.CountAhead), and hands the window to `count.counted`; not when Redis is away."""
        raw_user: Any = None
        raw_session: Any = None
        answered = time.monotonic() >= self._skip_redis_until
        if answered:
            keys = [user_key(self.namespace, user_id), session_key(self.namespace, session_id)]
            try:
                async with asyncio.timeout(TIMEOUT_S):
                    if count is None:
                        raw_user, raw_session = await self.redis.mget(keys)
                    else:
                        raw_user, raw_session, n, ttl_ms = await self.read_and_count(
                            keys=[*keys, count.key], args=[count.window_s * 1000]
                        )
                        count.counted(int(n), int(ttl_ms) / 1000)
            except (RedisError, TimeoutError) as e:
                answered = False
                self._skip_redis_until = time.monotonic() + SKIP_REDIS_S
                log.warning("access checks read the event store for %.0f s: Redis did not answer (%s)", SKIP_REDIS_S, e)
        user = decode_user(user_id, raw_user)
        session = decode_session(session_id, raw_session)
        fills: list[UserAccess | SessionAccess] = []
        if user is None:
            user = await self.run(self.identity.user_access, user_id)
            if user is not None and answered and raw_user is None:
                fills.append(user)
        if session is None:
            session = await self.run(self.identity.session_access, session_id)
            if session is not None and answered and raw_session is None:
                fills.append(session)
        if fills:
            await self._fill(fills)
        if user is None or session is None or session.user_id != user_id:
            raise NotAuthorizedException("the access token's session does not exist")
        if session.ended or session.epoch < user.epoch:
            raise NotAuthorizedException("the session has ended; log in again")
        return Actor(user_id, user.roles)

    async def _fill(self, states: list[UserAccess | SessionAccess]) -> None:
        """Offers states read from the event store; a fill that fails only means another read later."""
        try:
            async with asyncio.timeout(TIMEOUT_S):
                for state in states:
                    await self.store(keys=[key_of(self.namespace, state)], args=store_args(state, replace_hold=False))
        except (RedisError, TimeoutError) as e:
            log.debug("could not fill access states: %s", e)

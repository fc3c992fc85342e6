"""Rate limits shared by every worker: Litestar's `RateLimitMiddleware`, counting in Redis.

The stock middleware reads the history from its store, checks it and writes it back under an
`anyio.Lock` that exists once per process (litestar#4700): with several workers, or several API
processes, two of them read the same count and both write count + 1, so the limit is multiplied by
the number of processes. Its key is also only the class name and the identifier, so two limits
with the same identifier would share one count. Here the configuration, the identifier functions,
the exclusion rules and the `RateLimit-*` headers stay Litestar's; only the count is replaced by
one atomic Redis script (a fixed window: INCR, and PEXPIRE on the window's first request), and
the key carries the limit's name.

A limit that cannot reach Redis lets the request through (and says so in the log, at most every
ten seconds): the command routes keep working on PostgreSQL alone while Redis is away.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
import redis.exceptions
from litestar.datastructures import MutableScopeHeaders
from litestar.exceptions import TooManyRequestsException
from litestar.middleware.rate_limit import DURATION_VALUES, DurationUnit, RateLimitConfig, RateLimitMiddleware
from litestar.stores.redis import RedisStore

from commands.base import Actor
from infra.observe.metrics import RATE_LIMIT_REFUSALS

if TYPE_CHECKING:
    from litestar.connection import Request
    from litestar.types import ASGIApp, Receive, Scope, Send

    from infra.settings import Settings

log = logging.getLogger(__name__)
STORE = "rate_limit"

_HIT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {n, ttl}
"""


class CountingRedisStore(RedisStore):
    """Litestar's Redis store, with one atomic operation more: count a request in a window."""

    def __init__(self, client: aioredis.Redis, namespace: str) -> None:
        super().__init__(client, namespace=namespace, handle_client_shutdown=True)
        self.client, self.prefix = client, f"{namespace}:counts:"
        self._hit = client.register_script(_HIT)

    async def hit(self, key: str, window_s: int) -> tuple[int, float]:
        """This window's count including this request, and the seconds until the window ends."""
        count, ttl_ms = await self._hit(keys=[self.prefix + key], args=[window_s * 1000])
        return int(count), int(ttl_ms) / 1000


@dataclass(frozen=True)
class Window:
    count: int
    reset_in: float


class SharedRateLimitMiddleware(RateLimitMiddleware):
    """`RateLimitMiddleware` whose count is atomic across processes (see the module docstring)."""

    def __init__(self, app: ASGIApp, config: RateLimitConfig) -> None:
        super().__init__(app, config)
        self._name = config.store_name if isinstance(config, NamedRateLimitConfig) else "default"
        self._warned_at = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = scope["litestar_app"]
        request: Request[Any, Any, Any] = app.request_class(scope)
        if await self.should_check_request(request=request):
            window = await self._count(self.cache_key_from_request(request), app)
            if window is not None:
                headers = self.headers_of(window)
                if window.count > self.max_requests:
                    RATE_LIMIT_REFUSALS.labels(self._name).inc()
                    raise TooManyRequestsException(
                        detail=f"too many requests: at most {self.max_requests} per {self.unit}; retry later",
                        headers={**headers, "Retry-After": str(max(1, math.ceil(window.reset_in)))},
                    )
                send = self._with_headers(send, headers)
        await self.app(scope, receive, send)

    def cache_key_from_request(self, request: Request[Any, Any, Any]) -> str:
        return f"{self._name}:{self.get_identifier_for_request(request)}"

    async def _count(self, key: str, app: Any) -> Window | None:
        store = self.config.get_store_from_app(app)
        assert isinstance(store, CountingRedisStore), "the rate_limit store must be a CountingRedisStore"
        try:
            count, reset_in = await store.hit(key, DURATION_VALUES[self.unit])
        except (redis.exceptions.RedisError, OSError) as e:
            now = time.monotonic()
            if now - self._warned_at > 10:
                self._warned_at = now
                log.warning("rate limit %s not applied: Redis does not answer (%s)", self._name, e)
            return None
        return Window(count, reset_in)

    def headers_of(self, window: Window) -> dict[str, str]:
        return {
            self.config.rate_limit_policy_header_key: f"{self.max_requests};w={DURATION_VALUES[self.unit]}",
            self.config.rate_limit_limit_header_key: str(self.max_requests),
            self.config.rate_limit_remaining_header_key: str(max(0, self.max_requests - window.count)),
            self.config.rate_limit_reset_header_key: str(max(0, math.ceil(window.reset_in))),
        }

    def _with_headers(self, send: Send, headers: dict[str, str]) -> Send:
        async def wrapped(message: Any) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                mutable = MutableScopeHeaders(message)
                for key, value in headers.items():
                    mutable[key] = value
            await send(message)

        return wrapped


@dataclass
class NamedRateLimitConfig(RateLimitConfig):
    """A `RateLimitConfig` with a name of its own, so each limit counts under its own keys."""

    store_name: str = "default"


def client_address(request: Request[Any, Any, Any]) -> str:
    """The peer address (a proxy in front must rewrite it, as Litestar's docs say: X-Forwarded-For is
    not trusted here)."""
    return request.client.host if request.client else "unknown"


def user_of(request: Request[Any, Any, Any]) -> str:
    user = request.scope.get("user")
    return str(user.user_id) if isinstance(user, Actor) else f"address:{client_address(request)}"


def _limit(name: str, unit: DurationUnit, count: int, identify: Any) -> NamedRateLimitConfig:
    return NamedRateLimitConfig(
        rate_limit=(unit, count),
        identifier_for_request=identify,
        middleware_class=SharedRateLimitMiddleware,
        store=STORE,
        store_name=name,
    )


def auth_limit(settings: Settings) -> NamedRateLimitConfig:
    """Per client address, on every /v1/auth route."""
    return _limit("auth", "minute", settings.auth_rate_limit_per_minute, client_address)


def command_limit(settings: Settings) -> NamedRateLimitConfig:
    """Per user, on every command route."""
    return _limit("commands", "second", settings.command_rate_limit_per_second, user_of)


def rate_limit_store(settings: Settings) -> CountingRedisStore:
    """The store the limits count in; its client connects on first use, never here."""
    timeout = min(1.0, settings.dependency_timeout_s)
    client = aioredis.from_url(settings.redis_url or "", socket_timeout=timeout, socket_connect_timeout=timeout)
    return CountingRedisStore(client, namespace=f"{settings.namespace}:ratelimit")

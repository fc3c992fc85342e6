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
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
import redis.exceptions
from litestar.exceptions import TooManyRequestsException
from litestar.middleware.rate_limit import DURATION_VALUES, DurationUnit, RateLimitConfig, RateLimitMiddleware
from litestar.stores.redis import RedisStore

from api.headers import set_headers
from commands.base import Actor
from infra.observe.metrics import RATE_LIMIT_REFUSALS

if TYPE_CHECKING:
    from litestar.connection import Request
    from litestar.types import ASGIApp, Receive, Scope, Send

    from infra.settings import Settings

log = logging.getLogger(__name__)
STORE = "rate_limit"


def hit_script(key: str, window_ms: str) -> str:
    """Lua that counts a request in the fixed window `key` (a KEYS[i]) of `window_ms` (an ARGV[j])
    milliseconds, leaving the count in `n` and the milliseconds left in `ttl`."""
    return f"""
local n = redis.call('INCR', {key})
if n == 1 then redis.call('PEXPIRE', {key}, {window_ms}) end
local ttl = redis.call('PTTL', {key})
if ttl < 0 then redis.call('PEXPIRE', {key}, {window_ms}); ttl = tonumber({window_ms}) end
"""


_HIT = hit_script("KEYS[1]", "ARGV[1]") + "return {n, ttl}\n"
COUNTED_AHEAD = "chronicle.counted_ahead"
"""The scope key under which a limit already counted for this request (by `CountAhead`) leaves its
`Window`, by the limit's name."""


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
            counted: dict[str, Window] = scope.get(COUNTED_AHEAD) or {}  # type: ignore[assignment]  # not an ASGI key
            window = counted.get(self._name)
            if window is None:
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
        encoded = [(key.lower().encode("latin-1"), value.encode("latin-1")) for key, value in headers.items()]

        async def wrapped(message: Any) -> None:
            if message["type"] == "http.response.start":
                set_headers(message, encoded)
            await send(message)

        return wrapped


@dataclass(frozen=True)
class CountAhead:
    """The per-user command limit, counted in the same Redis round trip as the access check of the
    request (api.access): the same key, window and script as `SharedRateLimitMiddleware` would
    use, one round trip fewer. The middleware then finds the count in the scope (`COUNTED_AHEAD`)
    and decides as always; if the access check could not count (Redis did not answer, or the route
    is not one this limit applies to), the middleware counts by itself."""

    name: str
    key_prefix: str
    window_s: int

    def of(self, scope: Any, method: str, path: str, user_id: uuid.UUID) -> RequestCount | None:
        """What the access check of this request should count, if this limit applies to it."""
        if not is_command(method, path) or self.name in scope.get(COUNTED_AHEAD, ()):
            return None
        # The key `SharedRateLimitMiddleware` counts under: its store's prefix, `cache_key_from_request`.
        return RequestCount(f"{self.key_prefix}{self.name}:{identifier_of(user_id)}", self.window_s, self.name, scope)


@dataclass(frozen=True)
class RequestCount:
    """One request's count in a limit's window (`api.access.Count`), left in its scope when counted."""

    key: str
    window_s: int
    name: str
    scope: Any

    def counted(self, count: int, reset_in: float) -> None:
        self.scope.setdefault(COUNTED_AHEAD, {})[self.name] = Window(count, reset_in)


def is_command(method: str, path: str) -> bool:
    """Every route that changes something, apart from /v1/auth (limited per address instead)."""
    return method not in ("GET", "HEAD", "OPTIONS") and not path.startswith("/v1/auth/")


def count_ahead(config: NamedRateLimitConfig, store: CountingRedisStore) -> CountAhead:
    unit = config.rate_limit[0]
    return CountAhead(config.store_name, store.prefix, DURATION_VALUES[unit])


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
    return identifier_of(user.user_id) if isinstance(user, Actor) else f"address:{client_address(request)}"


def identifier_of(user_id: uuid.UUID) -> str:
    """A signed-in user's identifier in the per-user limit's keys."""
    return str(user_id)


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

"""What one API process holds while it serves: the write side, and clients of NATS and Redis.

Built in the Litestar lifespan (never at import time) and reached by handlers through
`Provide(runtime)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis.asyncio as aioredis
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from nats.aio.client import Client as NATS
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from redis.commands.core import AsyncScript

from api.access import AccessCheck
from api.auth_guard import AuthGuard
from api.live_versions import LiveVersions
from api.problems import ServiceUnavailable
from infra.bootstrap import Chronicle, bootstrap
from infra.delivery.checkpoints import CheckpointWatcher
from infra.delivery.relay import connect_nats
from infra.settings import Settings
from infra.views.l1 import L1

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Runtime:
    settings: Settings
    chronicle: Chronicle
    redis: aioredis.Redis
    executor: ThreadPoolExecutor
    views: AsyncConnectionPool[AsyncConnection[Any]]
    checkpoints: CheckpointWatcher
    hash_executor: ThreadPoolExecutor
    cache: L1
    nats: NATS | None = None
    live_versions: LiveVersions = field(init=False)
    guard: AuthGuard = field(init=False)
    access: AccessCheck = field(init=False)
    scripts: dict[str, AsyncScript] = field(init=False, default_factory=dict)
    position_waiters: int = 0
    hashing: int = 0
    health_cache: Any = None

    def __post_init__(self) -> None:
        self.live_versions = LiveVersions(self.views, self.settings.namespace, self.cache)
        self.guard = AuthGuard(self.redis, self.settings)
        self.access = AccessCheck(
            self.settings.redis_url or "", self.settings.namespace, self.chronicle.identity, self.run
        )

    def script(self, source: str) -> AsyncScript:
        """The Lua script `source`, registered once on this process's Redis client (its SHA is
        computed once; Redis loads it on first use)."""
        script = self.scripts.get(source)
        if script is None:
            script = self.scripts[source] = self.redis.register_script(source)
        return script

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Runs the synchronous write side in one of a few worker threads (a plain executor: the hop
        costs less than half of anyio's, measured with `chronicle bench commands`), in a copy of
        the caller's context: its log bindings and current span go along."""
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self.executor, call)

    async def run_hashing(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Runs a command that hashes a password (register, login, refresh) on the few threads kept for
        that, so a flood of logins queues behind them and never takes the command threads. At most
        `password_hash_queue` of them wait or run at once; beyond that one is refused at once (503)."""
        if self.hashing >= self.settings.password_hash_queue:
            raise ServiceUnavailable("too many logins at once; retry shortly", retry_after=1)
        self.hashing += 1
        try:
            loop = asyncio.get_running_loop()
            # In a copy of the caller's context, so its log lines carry the request's correlation id.
            call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
            return await loop.run_in_executor(self.hash_executor, call)
        finally:
            self.hashing -= 1


PURGE_EVERY_S = 600.0


async def purge_idempotency_keys(runtime: Runtime) -> None:
    """Forgets expired Idempotency-Keys now and then (a key past its time is ignored already: this
    only keeps the table small)."""
    while True:
        try:
            while await runtime.run(runtime.chronicle.idempotency.purge_expired) > 0:
                pass
        except Exception as e:
            log.warning("could not purge expired idempotency keys (will try again): %s", e)
        await asyncio.sleep(PURGE_EVERY_S)


async def keep_nats(runtime: Runtime, url: str) -> None:
    """The API never needs NATS to serve (the relay publishes, queries read views): it only reports
    on it. So it connects in the background (retrying forever while NATS is away)."""
    runtime.nats = await connect_nats(url, "chronicle-api")


@contextlib.asynccontextmanager
async def runtime_lifespan(app: Litestar, settings: Settings) -> AsyncIterator[None]:
    chronicle = await asyncio.to_thread(bootstrap, settings)
    timeout = settings.dependency_timeout_s
    redis_client = aioredis.from_url(
        settings.redis_url or "", decode_responses=False, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    executor = ThreadPoolExecutor(min(settings.command_threads, settings.db_pool_size), thread_name_prefix="command")
    hash_executor = ThreadPoolExecutor(settings.password_hash_threads, thread_name_prefix="password-hash")
    views: AsyncConnectionPool[AsyncConnection[Any]] = AsyncConnectionPool(
        settings.database_url or "",
        min_size=2,
        max_size=settings.query_pool_size,
        open=False,
        # A query waits at most `timeout` for a connection (then 503), also while the server is away.
        timeout=timeout,
        kwargs={"autocommit": True, "connect_timeout": max(1, int(timeout))},
        name="chronicle-queries",
    )
    await views.open(wait=True, timeout=30)
    cache = L1(settings.l1_cache_mb * 1024 * 1024)
    watcher = CheckpointWatcher(settings.redis_url or "", settings.namespace, cache)
    watcher.start()
    runtime = Runtime(settings, chronicle, redis_client, executor, views, watcher, hash_executor, cache)
    app.state.runtime = runtime
    nats_task = asyncio.create_task(keep_nats(runtime, settings.nats_url or ""))
    purge_task = asyncio.create_task(purge_idempotency_keys(runtime))
    try:
        yield
    finally:
        for task in (nats_task, purge_task):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        if runtime.nats is not None:
            with contextlib.suppress(Exception):
                await runtime.nats.close()
        await watcher.stop()
        await runtime.access.close()
        await redis_client.aclose()
        await views.close()
        executor.shutdown(wait=True)
        hash_executor.shutdown(wait=True)
        await asyncio.to_thread(chronicle.close)


def get_runtime(state: State) -> Runtime:
    runtime: Runtime = state.runtime
    return runtime


# The dependencies of every controller: the process's runtime, handed to handlers as `runtime`.
RUNTIME = {"runtime": Provide(get_runtime, sync_to_thread=False)}

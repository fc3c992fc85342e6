"""The hottest keys of the API processes' caches, shared through Redis, so that a process that
starts (a deploy, a restart, one more worker) reads them before its first requests ask.

Every `SHARE_EVERY_S`, and when it stops, each process adds the hit counts of its most used
entries to one sorted set (`<namespace>:l1:hot`, the `KEPT` highest kept). A process that starts
reads the `WARM` highest once its cache follows the announcements, as an administrator would see
them (the answers are kept before any caller's rights are applied; each caller's are checked on
every answer). A key that no longer exists is skipped; a failure only leaves the cache cold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

import msgspec
import redis.exceptions

from api.queries import cached
from api.queries.catalog import ProductView
from api.queries.identity import UserView
from api.queries.work import ProjectView, TaskView
from api.runtime import Runtime
from commands.base import Actor
from domain.errors import NotFound
from domain.identity import Role
from projections.catalog import CatalogFilter

log = logging.getLogger(__name__)
SHARE_EVERY_S = 30.0
SHARED = 100
"""How many of its hottest entries a process adds each time."""
KEPT = 2000
DECAY = 0.9
"""Each share multiplies the counts before it by this."""
WARM = 256
_READER = Actor(uuid.UUID(int=0), frozenset({Role.ADMIN}))


def hot_key(namespace: str) -> str:
    return f"{namespace}:l1:hot"


async def share(runtime: Runtime) -> None:
    hottest = runtime.cache.hottest(SHARED)
    if not hottest:
        return
    key = hot_key(runtime.settings.namespace)
    async with runtime.redis.pipeline(transaction=False) as pipe:
        pipe.zunionstore(key, {key: DECAY})  # yesterday's hot keys fade
        for projection, entry, hits in hottest:
            pipe.zincrby(key, hits, f"{projection} {entry}")
        pipe.zremrangebyrank(key, 0, -KEPT - 1)
        await pipe.execute()


async def keep_sharing(runtime: Runtime) -> None:
    while True:
        await asyncio.sleep(SHARE_EVERY_S)
        try:
            await share(runtime)
        except (redis.exceptions.RedisError, OSError) as e:
            log.debug("could not share the cache's hottest keys: %s", e)


@contextlib.asynccontextmanager
async def warming(runtime: Runtime) -> AsyncIterator[None]:
    """While the API serves: warms its cache at start, shares its hottest keys now and then and
    when it stops."""
    if runtime.cache.max_bytes == 0:
        yield
        return
    tasks = [asyncio.create_task(warm(runtime)), asyncio.create_task(keep_sharing(runtime))]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            await share(runtime)


async def warm(runtime: Runtime) -> int:
    """Reads the hottest keys into the cache once it follows the announcements; how many it read."""
    await runtime.checkpoints.subscribed.wait()
    try:
        members = await runtime.redis.zrevrange(hot_key(runtime.settings.namespace), 0, WARM - 1)
    except (redis.exceptions.RedisError, OSError) as e:
        log.info("the cache starts cold: %s", e)
        return 0
    read = 0
    for member in members:
        _, entry = (member.decode() if isinstance(member, bytes) else str(member)).split(" ", 1)
        try:
            read += await _read(runtime, entry)
        except NotFound:
            pass  # gone since
        except Exception as e:  # a server away, or a key of another release: the cache stays cold there
            log.debug("could not warm %s: %s", entry, e)
    log.info("cache warmed with %d of the %d hottest keys", read, len(members))
    return read


async def _read(runtime: Runtime, entry: str) -> bool:
    kind, _, key = entry.partition(":")
    match kind:
        case "task":
            await cached.read_task(runtime, _READER, uuid.UUID(key), TaskView, ProjectView)
        case "project":
            await cached.read_project(runtime, _READER, uuid.UUID(key), ProjectView)
        case "board":
            await cached.read_board(runtime, _READER, uuid.UUID(key))
        case "user":
            await cached.read_user(runtime, uuid.UUID(key), UserView)
        case "product":
            await cached.read_product(runtime, key)
        case "page":
            await cached.read_page(runtime, msgspec.json.decode(key, type=CatalogFilter), ProductView)
        case _:
            return False
    return True

"""Read-your-writes without polling the database: projectors announce each checkpoint they commit
on a Redis channel; each API process follows it and wakes the queries waiting for a position.

The announcements are only hints: a waiting query also reads the checkpoints from the stores
every 200 ms, so a lost announcement (or Redis away) delays an answer, never falsifies it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import msgspec
import redis.asyncio as aioredis

from infra.views.l1 import L1, channel, decode_announcements

log = logging.getLogger(__name__)


class CheckpointWatcher:
    """Follows the announcements (`infra.views.l1.Announcement`, a JSON list per message) for the
    read-your-writes waits and for the process's cache, if it has one: the cache serves nothing
    until the channel is subscribed, and is emptied whenever the subscription is lost."""

    def __init__(self, redis_url: str, namespace: str, cache: L1 | None = None) -> None:
        self.redis_url, self.namespace, self.cache = redis_url, namespace, cache
        self.positions: dict[tuple[str, int], int] = {}
        self.parts: dict[tuple[str, int], dict[int, int]] = {}
        self.changed = asyncio.Condition()
        self.subscribed = asyncio.Event()
        """Set while the announcements are followed."""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    def learn(self, projection: str, version: int, position: int) -> None:
        """The latest checkpoint heard or read, even when lower than the one before: only `projections
        reset` moves a checkpoint back, and a wait must then see the view rebuilding, not the
        position it had before. A late, lower hint only makes a wait read the stores again."""
        self.positions[(projection, version)] = position

    def learn_part(self, projection: str, version: int, position: int, part: int, partitions: int) -> None:
        """One partition's checkpoint; the view's is the lowest of all its partitions', once every
        one has been heard of (until then, waits read the stores)."""
        known = self.parts.setdefault((projection, version), {})
        known[part] = position
        if len(known) == partitions and all(p < partitions for p in known):
            self.learn(projection, version, min(known.values()))

    async def wait(self, timeout: float) -> None:
        async with self.changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout)

    async def _follow(self) -> None:
        while True:
            client = aioredis.from_url(self.redis_url, socket_timeout=None)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(channel(self.namespace))
                    async for message in pubsub.listen():
                        if message.get("type") == "subscribe":
                            if self.cache is not None:
                                self.cache.found()  # every announcement from now on reaches us
                            self.subscribed.set()
                        if message.get("type") != "message":
                            continue
                        self._hear(message["data"])
                        async with self.changed:
                            self.changed.notify_all()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis away: queries fall back to reading the stores
                log.debug("checkpoint announcements unavailable (%s); retrying", e)
                await asyncio.sleep(1.0)
            finally:
                self.subscribed.clear()
                if self.cache is not None:
                    self.cache.lost()
                await client.aclose()

    def _hear(self, data: bytes) -> None:
        try:
            announcements = decode_announcements(data)
        except msgspec.DecodeError as e:  # not ours: the cache cannot know what it missed
            log.warning("unreadable checkpoint announcement (%s); emptying the cache", e)
            if self.cache is not None:
                self.cache.flush()
            return
        for a in announcements:
            if self.cache is not None:
                self.cache.hear(a)
            if a.part >= 0:
                self.learn_part(a.projection, a.version, a.end, a.part, a.partitions)
            else:
                self.learn(a.projection, a.version, a.end)

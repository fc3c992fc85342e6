"""Read-your-writes without polling the database, and an exact cache: projectors announce each
checkpoint they commit, with what its batch touched, on a Redis channel; each API process follows
it, wakes the queries waiting for a position and drops what its cache (infra.views.l1) holds of
what was touched.

For read-your-writes the announcements are only hints: a waiting query also reads the checkpoints
from the stores every 200 ms, so a lost announcement delays an answer, never falsifies it. The
cache trusts them only while the channel is followed: it is emptied whenever the subscription is
lost or stops answering its PINGs (`DEAD_S`), and a projector re-sends what it could not send.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from infra.views.l1 import L1, channel, decode_announcements

log = logging.getLogger(__name__)
PING_S = 1.0
DEAD_S = 3.0


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
                    await self._listen(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis away: queries fall back to reading the stores
                self._lost()  # before waiting: nothing cached may be served while announcements are missed
                log.debug("checkpoint announcements unavailable (%s); retrying", e)
                await asyncio.sleep(1.0)
            finally:
                self._lost()
                await client.aclose()

    async def _listen(self, pubsub: PubSub) -> None:
        """Reads the channel, and PINGs it when it is quiet: a connection that stops answering (a
        host gone without a reset, a dropped route) is given up after `DEAD_S`, as if it closed."""
        heard = pinged = time.monotonic()
        while True:
            message = await pubsub.get_message(timeout=PING_S)
            now = time.monotonic()
            if message is None:
                if now - heard > DEAD_S:
                    raise ConnectionError(f"the checkpoints channel has not answered for {DEAD_S:.0f} s")
                if now - pinged >= PING_S:
                    await pubsub.ping()
                    pinged = now
                continue
            heard = now
            if message["type"] == "subscribe":
                if self.cache is not None:
                    self.cache.found()  # every announcement from now on reaches us
                self.subscribed.set()
            elif message["type"] == "message":
                self._hear(message["data"])
                async with self.changed:
                    self.changed.notify_all()

    def _lost(self) -> None:
        self.subscribed.clear()
        if self.cache is not None and self.cache.connected:
            self.cache.lost()

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

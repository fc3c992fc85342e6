"""Read-your-writes without polling the database: projectors announce each checkpoint they commit
on a Redis channel; each API process follows it and wakes the queries waiting for a position.

The announcements are only hints: a waiting query also reads the checkpoints from the stores
every 200 ms, so a lost announcement (or Redis away) delays an answer, never falsifies it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis.asyncio as aioredis

log = logging.getLogger(__name__)


def channel(namespace: str) -> str:
    return f"{namespace}:checkpoints"


def announcement(projection: str, version: int, position: int, part: int | None = None, partitions: int = 1) -> str:
    """One line of an announcement; a message carries one line per checkpoint a batch moved. A
    partition's line names it (`3/4`)."""
    return f"{projection} {version} {position}" + ("" if part is None else f" {part}/{partitions}")


class CheckpointWatcher:
    def __init__(self, redis_url: str, namespace: str) -> None:
        self.redis_url, self.namespace = redis_url, namespace
        self.positions: dict[tuple[str, int], int] = {}
        self.parts: dict[tuple[str, int], dict[int, int]] = {}
        self.changed = asyncio.Condition()
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
                        if message.get("type") != "message":
                            continue
                        for line in message["data"].decode().splitlines():
                            name, version, position, *part = line.split()
                            if part:
                                index, partitions = part[0].split("/")
                                self.learn_part(name, int(version), int(position), int(index), int(partitions))
                            else:
                                self.learn(name, int(version), int(position))
                        async with self.changed:
                            self.changed.notify_all()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis away: queries fall back to reading the stores
                log.debug("checkpoint announcements unavailable (%s); retrying", e)
                await asyncio.sleep(1.0)
            finally:
                await client.aclose()

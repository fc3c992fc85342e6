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


def announcement(projection: str, version: int, position: int) -> str:
    """One line of an announcement; a message carries one line per checkpoint a batch moved."""
    return f"{projection} {version} {position}"


class CheckpointWatcher:
    def __init__(self, redis_url: str, namespace: str) -> None:
        self.redis_url, self.namespace = redis_url, namespace
        self.positions: dict[tuple[str, int], int] = {}
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
                            name, version, position = line.split()
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

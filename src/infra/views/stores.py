"""Where consumers keep their views and positions: `store_for` picks the store of a projection's
version (SQL or Redis) or of a process manager (its tracking row)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
import redis.asyncio as aioredis

from infra.eventstore.envelope import EventEnvelope
from infra.views.base import Fingerprint, StaleCheckpoint, ViewStore
from infra.views.redisstore import RedisStore
from infra.views.sqlstore import SqlStore
from projections.base import EventConsumer, ProcessManager, RedisProjection, SqlProjection


class TrackingStore:
    """A process manager's (the order saga's) position: its tracking row, which it writes in the
    transaction of the events it appends. It has no view to prepare, publish, compare or drop; an
    operator may move it past a parked event (`apply` of no events)."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], projection: ProcessManager) -> None:
        self.conn, self.projection, self.version = conn, projection, projection.version
        self.touched: set[str] | None = set()  # no view: nothing a cache holds

    async def prepare(self) -> None:
        return None

    async def publish_views(self) -> None:
        return None

    async def checkpoint(self) -> int:
        row = await (
            await self.conn.execute(
                "SELECT notification_id FROM tracking WHERE application_name = %s", (self.projection.name,)
            )
        ).fetchone()
        return int(row[0]) if row else 0

    async def apply(self, envelopes: Sequence[EventEnvelope], expected: int, new: int) -> None:
        if envelopes:
            raise TypeError("a process applies events itself; a TrackingStore only records skips")
        row = await (
            await self.conn.execute(
                "INSERT INTO tracking AS t (application_name, notification_id) VALUES (%s, %s)"
                " ON CONFLICT (application_name) DO UPDATE SET notification_id = excluded.notification_id"
                " WHERE t.notification_id = %s RETURNING 1",
                (self.projection.name, new, expected),
            )
        ).fetchone()
        if row is None:
            raise StaleCheckpoint(f"{self.projection.name} is no longer at {expected}")

    async def fingerprint(self) -> Fingerprint:
        raise TypeError(f"{self.projection.name} is a process: it has no view to compare")

    async def drop(self) -> None:
        raise TypeError(f"{self.projection.name} is a process: its position is history, never dropped")


def store_for(
    conn: psycopg.AsyncConnection[Any],
    client: aioredis.Redis | None,
    namespace: str,
    consumer: EventConsumer,
    version: int,
) -> ViewStore:
    """Where a version of the consumer keeps its view and checkpoint (not yet prepared)."""
    match consumer:
        case ProcessManager():
            return TrackingStore(conn, consumer)
        case SqlProjection():
            return SqlStore(conn, consumer, version)
        case RedisProjection() if client is not None:
            return RedisStore(client, namespace, consumer, version)
        case _:
            raise TypeError(f"no store for {consumer.name} ({consumer.kind})")

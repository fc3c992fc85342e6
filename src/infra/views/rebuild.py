"""Building a projection's view straight from the event log (PostgreSQL, the source of truth).

The log is streamed through a server-side cursor in batches, so memory stays bounded whatever its
size; each batch lands with its checkpoint, as the live projector's do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import redis.asyncio as aioredis

from infra.eventstore.envelope import LOG_COLUMNS, EnvelopeReader
from infra.eventstore.recorder import GATE, head_position
from infra.views.base import ViewStore
from infra.views.stores import store_for
from projections.base import EventConsumer

Progress = Callable[[int, int, int], None]
"""Called with (events applied so far, position reached, position to reach)."""


async def open_store(
    conn: psycopg.AsyncConnection[Any], client: aioredis.Redis, namespace: str, projection: EventConsumer, version: int
) -> ViewStore:
    store = store_for(conn, client, namespace, projection, version)
    await store.prepare()
    return store


async def replay(
    url: str,
    store: ViewStore,
    *,
    after: int,
    until: int | None = None,
    batch_size: int = 2000,
    progress: Progress | None = None,
) -> int:
    """Applies every event after `after` (up to `until`, else the head at the start) to `store`,
    batch by batch with its checkpoint; returns the position reached. Only the event types the
    projection handles are read (the others change nothing), and the checkpoint still ends at the
    last position, handled or not."""
    reader = EnvelopeReader()
    applied, checkpoint = 0, after
    types = sorted(store.projection.handles)
    async with await psycopg.AsyncConnection.connect(url) as conn:
        end = until if until is not None else await head_position(conn)
        async with conn.transaction(), conn.cursor(name="chronicle_replay") as cursor:
            cursor.itersize = batch_size
            await cursor.execute(
                f"SELECT {LOG_COLUMNS} FROM events WHERE notification_id > %s"
                f" AND notification_id <= %s AND notification_id < {GATE} AND type = ANY(%s)"
                f" ORDER BY notification_id",
                (after, end, types),
            )
            while rows := await cursor.fetchmany(batch_size):
                envelopes = reader.from_rows(rows, checkpoint)
                await store.apply(envelopes, checkpoint, envelopes[-1].position)
                checkpoint = envelopes[-1].position
                applied += len(envelopes)
                if progress is not None:
                    progress(applied, checkpoint, end)
        if checkpoint < end:
            await store.apply([], checkpoint, end)
            checkpoint = end
    return checkpoint

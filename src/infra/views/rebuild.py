"""Building a projection's view straight from the event log (PostgreSQL, the source of truth), and
fingerprints of views to compare one version with another.

The log is streamed through a server-side cursor in batches, so memory stays bounded whatever its
size; each batch lands with its checkpoint, as the live projector's do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import redis.asyncio as aioredis

from infra.eventstore.envelope import LOG_COLUMNS, EnvelopeReader
from infra.eventstore.recorder import GATE, head_position
from infra.views.stores import RedisStore, SqlStore, ViewStore, store_for, table_names
from projections.base import Projection, SqlProjection

Progress = Callable[[int, int, int], None]
"""Called with (events applied so far, position reached, position to reach)."""


async def open_store(
    conn: psycopg.AsyncConnection[Any], client: aioredis.Redis, namespace: str, projection: Projection, version: int
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


@dataclass
class Fingerprint:
    """Per table (or key kind): how many rows/keys, and a checksum of their content."""

    counts: dict[str, int] = field(default_factory=dict)
    checksums: dict[str, str] = field(default_factory=dict)

    def differences(self, other: Fingerprint) -> list[str]:
        found = []
        for part in sorted(set(self.counts) | set(other.counts)):
            mine, theirs = self.counts.get(part, 0), other.counts.get(part, 0)
            if mine != theirs:
                found.append(f"{part}: {mine} rows here, {theirs} there")
            elif self.checksums.get(part) != other.checksums.get(part):
                found.append(f"{part}: same number of rows ({mine}), different content")
        return found


async def sql_fingerprint(conn: psycopg.AsyncConnection[Any], projection: SqlProjection, version: int) -> Fingerprint:
    result = Fingerprint()
    for name, table in table_names(projection, version).items():
        row = await (
            await conn.execute(
                f"SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {table} t".encode()
            )
        ).fetchone()
        assert row is not None
        result.counts[name], result.checksums[name] = int(row[0]), str(row[1])
    return result


DUMP_CHUNK = 500


async def redis_fingerprint(client: aioredis.Redis, store: RedisStore) -> Fingerprint:
    """Keys grouped by kind (`board`, `task`, `open`, ...), the checkpoint left out."""
    digests: dict[str, Any] = {}
    entries: dict[str, list[bytes]] = {}
    async for raw in client.scan_iter(match=store.prefix + "*", count=1000):
        key = raw.decode() if isinstance(raw, bytes) else raw
        relative = key[len(store.prefix) :]
        if relative == "checkpoint":
            continue
        kind = relative.split(":", 1)[0]
        entries.setdefault(kind, []).append(key.encode())
    result = Fingerprint()
    for kind, keys in entries.items():
        digest = hashlib.sha256()
        ordered = sorted(keys)
        for start in range(0, len(ordered), DUMP_CHUNK):
            chunk = ordered[start : start + DUMP_CHUNK]
            for key, dumped in zip(chunk, await _dump(client, chunk), strict=True):
                digest.update(key[len(store.prefix.encode()) :] + b"=" + dumped)
        digests[kind] = digest.hexdigest()
        result.counts[kind], result.checksums[kind] = len(keys), digests[kind]
    return result


async def _dump(client: aioredis.Redis, keys: list[bytes]) -> list[bytes]:
    """Each key's content as comparable bytes, in two pipelined round trips for the whole chunk."""
    async with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.type(key)
        kinds = [_b(k).decode() for k in await pipe.execute()]
    async with client.pipeline(transaction=False) as pipe:
        for key, kind in zip(keys, kinds, strict=True):
            if kind == "hash":
                pipe.hgetall(key)
            elif kind == "zset":
                pipe.zrange(key, 0, -1, withscores=True)
            elif kind == "string":
                pipe.get(key)
            else:
                pipe.type(key)
        values = await pipe.execute()
    dumped = []
    for kind, value in zip(kinds, values, strict=True):
        if kind == "hash":
            dumped.append(repr(sorted((_b(k), _b(v)) for k, v in value.items())).encode())
        elif kind == "zset":
            dumped.append(repr([(_b(pair[0]), pair[1]) for pair in value]).encode())
        elif kind == "string":
            dumped.append(_b(value or b""))
        else:
            dumped.append(kind.encode())
    return dumped


def _b(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


async def fingerprint(conn: psycopg.AsyncConnection[Any], client: aioredis.Redis, store: ViewStore) -> Fingerprint:
    if isinstance(store, SqlStore):
        return await sql_fingerprint(conn, store.projection, store.version)
    assert isinstance(store, RedisStore), "processes have no view to fingerprint"
    return await redis_fingerprint(client, store)

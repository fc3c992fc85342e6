"""Where projections' views live, and how a batch and its checkpoint land atomically:
one PostgreSQL transaction for SQL views, one Lua script for Redis views.

Both check the checkpoint they expect before writing (a fencing token against a projector that
lost its lock but has not noticed yet) and refuse with `StaleCheckpoint` when it moved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
import psycopg.errors
import redis.asyncio as aioredis

from infra.envelope import EventEnvelope
from projections.base import Projection, RedisProjection, SqlProjection


class StaleCheckpoint(Exception):
    """The stored checkpoint is not the one this batch was planned from."""


class Parked(Exception):
    """The projection stopped at an event it could not apply."""


# -- SQL ---------------------------------------------------------------------------------------


def table_names(projection: SqlProjection, version: int) -> dict[str, str]:
    return {name: f"{projection.schema}.{name}_v{version}" for name in projection.tables}


class BufferedSqlView:
    def __init__(self, tables: Mapping[str, str]) -> None:
        self.tables = tables
        self.statements: list[tuple[str, Sequence[Any]]] = []

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.statements.append((sql.format_map(self.tables), params))


_ADVANCE = ("WITH moved AS (UPDATE projection_checkpoints SET position = %s, updated_at = now()"
            " WHERE projection = %s AND version = %s AND position = %s RETURNING 1) SELECT 1 / count(*) FROM moved")


class SqlStore:
    """A SQL projection version's tables and checkpoint, written through the projector's connection
    (the one holding the projection's lock)."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], projection: SqlProjection, version: int) -> None:
        self.conn, self.projection, self.version = conn, projection, version
        self.tables = table_names(projection, version)

    async def prepare(self) -> None:
        async with self.conn.transaction():
            for name, ddl in self.projection.tables.items():
                exists = await (await self.conn.execute("SELECT to_regclass(%s)", (self.tables[name],))).fetchone()
                if exists and exists[0]:
                    continue
                for statement in ddl.split(";"):
                    if statement.strip():
                        await self.conn.execute(statement.format_map(self.tables).encode())
            await self.conn.execute("INSERT INTO projection_checkpoints (projection, version) VALUES (%s, %s)"
                                    " ON CONFLICT DO NOTHING", (self.projection.name, self.version))

    async def publish_views(self) -> None:
        """Points the unversioned names (what queries read) at this version's tables."""
        async with self.conn.transaction():
            for name, table in self.tables.items():
                view = f"{self.projection.schema}.{name}"
                await self.conn.execute(f"DROP VIEW IF EXISTS {view}".encode())
                await self.conn.execute(f"CREATE VIEW {view} AS SELECT * FROM {table}".encode())

    async def checkpoint(self) -> int:
        row = await (await self.conn.execute(
            "SELECT position FROM projection_checkpoints WHERE projection = %s AND version = %s",
            (self.projection.name, self.version))).fetchone()
        return int(row[0]) if row else 0

    async def apply(self, envelopes: Sequence[EventEnvelope], expected: int, new: int) -> None:
        view = BufferedSqlView(self.tables)
        for envelope in envelopes:
            if envelope.type in self.projection.handles:
                self.projection.apply(envelope, view)
        # One round trip: BEGIN, the view's statements, the checkpoint, COMMIT, all pipelined. The
        # checkpoint statement divides by zero (aborting the transaction) unless the stored
        # checkpoint is the one this batch was planned from.
        try:
            async with self.conn.pipeline(), self.conn.transaction(), self.conn.cursor() as cur:
                for sql, params in view.statements:
                    await cur.execute(sql, params)
                await cur.execute(_ADVANCE, (new, self.projection.name, self.version, expected))
        except psycopg.errors.DivisionByZero:
            raise StaleCheckpoint(f"{self.projection.name} v{self.version} is no longer at {expected}") from None


# -- Redis -------------------------------------------------------------------------------------

# KEYS[1] is the checkpoint; ARGV: expected checkpoint, new checkpoint, then operations as
# (command, key index, argument count, arguments...). All keys of a view share one hash tag.
APPLY_BATCH = """
local current = redis.call('GET', KEYS[1]) or '0'
if current ~= ARGV[1] then
  return redis.error_reply('STALE ' .. current)
end
local allowed = {HSET=true, HDEL=true, HINCRBY=true, ZADD=true, ZREM=true, SADD=true, SREM=true, DEL=true}
local i = 3
while i <= #ARGV do
  local command = ARGV[i]
  if not allowed[command] then return redis.error_reply('FORBIDDEN ' .. command) end
  local key = KEYS[tonumber(ARGV[i + 1])]
  local n = tonumber(ARGV[i + 2])
  redis.call(command, key, unpack(ARGV, i + 3, i + 2 + n))
  i = i + 3 + n
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""


def redis_prefix(namespace: str, projection: Projection, version: int) -> str:
    return f"{namespace}:{{{projection.name}:v{version}}}:"


class BufferedRedisView:
    """Collects a batch's operations and keeps the hashes it read up to date as it goes."""

    def __init__(self, prefix: str, hashes: dict[str, dict[str, str]]) -> None:
        self.prefix = prefix
        self.hashes = hashes
        self.keys: dict[str, int] = {}
        self.ops: list[Any] = []

    def _op(self, command: str, key: str, *args: Any) -> None:
        index = self.keys.setdefault(self.prefix + key, len(self.keys) + 2)
        self.ops += [command, index, len(args), *args]

    def hash(self, key: str) -> dict[str, str]:
        if key not in self.hashes:
            raise KeyError(f"{key} was not declared by reads(); the projector did not fetch it")
        return dict(self.hashes[key])

    def hset(self, key: str, mapping: Mapping[str, str | int | float]) -> None:
        self.hashes.setdefault(key, {}).update({k: str(v) for k, v in mapping.items()})
        self._op("HSET", key, *[x for kv in mapping.items() for x in kv])

    def hdel(self, key: str, *fields: str) -> None:
        for field in fields:
            self.hashes.get(key, {}).pop(field, None)
        self._op("HDEL", key, *fields)

    def hincrby(self, key: str, field: str, delta: int) -> None:
        current = self.hashes.setdefault(key, {})
        current[field] = str(int(current.get(field, "0")) + delta)
        self._op("HINCRBY", key, field, delta)

    def zadd(self, key: str, member: str, score: float) -> None:
        self._op("ZADD", key, score, member)

    def zrem(self, key: str, member: str) -> None:
        self._op("ZREM", key, member)

    def sadd(self, key: str, member: str) -> None:
        self._op("SADD", key, member)

    def srem(self, key: str, member: str) -> None:
        self._op("SREM", key, member)

    def delete(self, key: str) -> None:
        self.hashes.pop(key, None)
        self._op("DEL", key)


class RedisStore:
    def __init__(self, client: aioredis.Redis, namespace: str, projection: RedisProjection, version: int) -> None:
        self.client, self.projection, self.version = client, projection, version
        self.prefix = redis_prefix(namespace, projection, version)
        self.checkpoint_key = self.prefix + "checkpoint"
        self.script = client.register_script(APPLY_BATCH)

    async def prepare(self) -> None:
        return None

    async def publish_views(self) -> None:
        return None

    async def checkpoint(self) -> int:
        value = await self.client.get(self.checkpoint_key)
        return int(value) if value else 0

    async def apply(self, envelopes: Sequence[EventEnvelope], expected: int, new: int) -> None:
        handled = [e for e in envelopes if e.type in self.projection.handles]
        reads = sorted({key for e in handled for key in self.projection.reads(e)})
        hashes: dict[str, dict[str, str]] = {}
        if reads:
            async with self.client.pipeline(transaction=False) as pipe:
                for key in reads:
                    pipe.hgetall(self.prefix + key)
                results = await pipe.execute()
            hashes = {key: {_s(k): _s(v) for k, v in result.items()} for key, result in zip(reads, results, strict=True)}
        view = BufferedRedisView(self.prefix, hashes)
        for envelope in handled:
            self.projection.apply(envelope, view)
        keys = [self.checkpoint_key, *view.keys]
        try:
            await self.script(keys=keys, args=[str(expected), str(new), *view.ops])
        except aioredis.ResponseError as e:
            if str(e).startswith("STALE"):
                raise StaleCheckpoint(f"{self.projection.name} v{self.version}: {e}") from None
            raise


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

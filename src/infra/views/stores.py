"""Where projections' views live, and how a batch and its checkpoint land atomically:
one PostgreSQL transaction for SQL views, one Lua script for Redis views.

Both check the checkpoint they expect before writing (a fencing token against a projector that
lost its lock but has not noticed yet) and refuse with `StaleCheckpoint` when it moved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import psycopg
import psycopg.errors
import redis.asyncio as aioredis

from infra.eventstore.envelope import EventEnvelope
from projections.base import Projection, RedisProjection, SqlProjection


class StaleCheckpoint(Exception):
    """The stored checkpoint is not the one this batch was planned from."""


class Parked(Exception):
    """The projection stopped at an event it could not apply."""


# -- SQL ---------------------------------------------------------------------------------------


def table_names(projection: SqlProjection, version: int) -> dict[str, str]:
    return {name: f"{projection.schema}.{name}_v{version}" for name in projection.tables}


@dataclass
class _RowOp:
    kind: str  # "insert" | "update" | "delete" | "replace" (delete, then insert)
    columns: dict[str, Any] = field(default_factory=dict)
    increments: dict[str, int] = field(default_factory=dict)


class BufferedSqlView:
    """A batch's writes as a unit of work: row operations coalesced per (table, key) and applied
    as grouped `executemany`s; raw statements after them, in order (see `SqlView`)."""

    def __init__(self, tables: Mapping[str, str], keys: Mapping[str, tuple[str, ...]]) -> None:
        self.tables, self.keys = tables, keys
        self.rows: dict[tuple[str, tuple[Any, ...]], _RowOp] = {}
        self.raw: list[tuple[str, Sequence[Any]]] = []

    def insert(self, table: str, row: Mapping[str, Any]) -> None:
        key = (table, tuple(row[c] for c in self.keys[table]))
        op = self.rows.get(key)
        if op is None:
            self.rows[key] = _RowOp("insert", dict(row))
        elif op.kind == "delete":
            self.rows[key] = _RowOp("replace", dict(row))

    def update(self, table: str, key: Sequence[Any], columns: Mapping[str, Any]) -> None:
        op = self.rows.setdefault((table, tuple(key)), _RowOp("update"))
        if op.kind == "delete":
            return
        op.columns.update(columns)
        for column in columns:
            op.increments.pop(column, None)

    def increment(self, table: str, key: Sequence[Any], column: str, delta: int) -> None:
        op = self.rows.setdefault((table, tuple(key)), _RowOp("update"))
        if op.kind == "delete":
            return
        if op.kind in ("insert", "replace") or column in op.columns:
            op.columns[column] = op.columns.get(column, 0) + delta
        else:
            op.increments[column] = op.increments.get(column, 0) + delta

    def delete(self, table: str, key: Sequence[Any]) -> None:
        self.rows[(table, tuple(key))] = _RowOp("delete")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.raw.append((sql.format_map(self.tables), params))

    def statements(self) -> list[tuple[str, list[Sequence[Any]]]]:
        """Deletes, inserts, updates (each grouped by shape), then raw statements in order."""
        deletes: dict[str, list[Sequence[Any]]] = {}
        inserts: dict[tuple[str, tuple[str, ...]], list[Sequence[Any]]] = {}
        updates: dict[tuple[str, tuple[str, ...], tuple[str, ...]], list[Sequence[Any]]] = {}
        for (table, key), op in self.rows.items():
            if op.kind in ("delete", "replace"):
                deletes.setdefault(table, []).append(key)
            if op.kind in ("insert", "replace"):
                columns = tuple(op.columns)
                inserts.setdefault((table, columns), []).append(tuple(op.columns.values()))
            elif op.kind == "update" and (op.columns or op.increments):
                shape = (table, tuple(op.columns), tuple(op.increments))
                updates.setdefault(shape, []).append((*op.columns.values(), *op.increments.values(), *key))
        found: list[tuple[str, list[Sequence[Any]]]] = []
        for table, keys in deletes.items():
            found.append((f"DELETE FROM {self.tables[table]} WHERE {self._where(table)}", keys))
        for (table, columns), rows in inserts.items():
            names, marks = ", ".join(columns), ", ".join(["%s"] * len(columns))
            conflict = ", ".join(self.keys[table])
            found.append(
                (
                    f"INSERT INTO {self.tables[table]} ({names}) VALUES ({marks}) ON CONFLICT ({conflict}) DO NOTHING",
                    rows,
                )
            )
        for (table, sets, adds), rows in updates.items():
            assignments = [f"{c} = %s" for c in sets] + [f"{c} = {c} + %s" for c in adds]
            found.append((f"UPDATE {self.tables[table]} SET {', '.join(assignments)} WHERE {self._where(table)}", rows))
        return found + [(sql, [params]) for sql, params in self.raw]

    def _where(self, table: str) -> str:
        return " AND ".join(f"{c} = %s" for c in self.keys[table])


_ADVANCE = (
    "WITH moved AS (UPDATE projection_checkpoints SET position = %s, updated_at = now()"
    " WHERE projection = %s AND version = %s AND position = %s RETURNING 1) SELECT 1 / count(*) FROM moved"
)


class SqlStore:
    """A SQL projection version's tables and checkpoint, written through the projector's connection
    (the one holding the projection's lock)."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], projection: SqlProjection, version: int) -> None:
        self.conn, self.projection, self.version = conn, projection, version
        self.tables = table_names(projection, version)

    async def prepare(self) -> None:
        """Creates the version's tables if they are missing. Another process may prepare the same
        version at the same moment (a projector starting while an operator asks for the status):
        a lock for the length of the transaction makes the second wait and then find the tables."""
        async with self.conn.transaction():
            await self.conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"prepare {self.projection.name} v{self.version}",)
            )
            for name, ddl in self.projection.tables.items():
                exists = await (await self.conn.execute("SELECT to_regclass(%s)", (self.tables[name],))).fetchone()
                if exists and exists[0]:
                    continue
                for statement in ddl.split(";"):
                    if statement.strip():
                        await self.conn.execute(statement.format_map(self.tables).encode())
            await self.conn.execute(
                "INSERT INTO projection_checkpoints (projection, version) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (self.projection.name, self.version),
            )

    async def publish_views(self) -> None:
        """Points the unversioned names (what queries read) at this version's tables."""
        async with self.conn.transaction():
            for name, table in self.tables.items():
                view = f"{self.projection.schema}.{name}"
                await self.conn.execute(f"DROP VIEW IF EXISTS {view}".encode())
                await self.conn.execute(f"CREATE VIEW {view} AS SELECT * FROM {table}".encode())

    async def checkpoint(self) -> int:
        row = await (
            await self.conn.execute(
                "SELECT position FROM projection_checkpoints WHERE projection = %s AND version = %s",
                (self.projection.name, self.version),
            )
        ).fetchone()
        return int(row[0]) if row else 0

    async def apply(self, envelopes: Sequence[EventEnvelope], expected: int, new: int) -> None:
        view = BufferedSqlView(self.tables, self.projection.keys)
        for envelope in envelopes:
            if envelope.type in self.projection.handles:
                self.projection.apply(envelope, view)
        # One round trip: BEGIN, the view's statements, the checkpoint, COMMIT, all pipelined. The
        # checkpoint statement divides by zero (aborting the transaction) unless the stored
        # checkpoint is the one this batch was planned from. A batch that changes nothing in the
        # view (most batches, for a view that handles few event types) moves the checkpoint in one
        # statement, atomic on its own on this autocommit connection.
        statements = view.statements()
        try:
            if not statements:
                await self.conn.execute(_ADVANCE, (new, self.projection.name, self.version, expected))
                return
            async with self.conn.pipeline(), self.conn.transaction(), self.conn.cursor() as cur:
                for sql, rows in statements:
                    if len(rows) == 1:
                        await cur.execute(sql, rows[0])
                    else:
                        await cur.executemany(sql, rows)
                await cur.execute(_ADVANCE, (new, self.projection.name, self.version, expected))
        except psycopg.errors.DivisionByZero:
            raise StaleCheckpoint(f"{self.projection.name} v{self.version} is no longer at {expected}") from None


# -- Redis -------------------------------------------------------------------------------------

# KEYS[1] is the checkpoint; ARGV: expected checkpoint, new checkpoint, and the operations as one
# JSON array of [command, key index, arguments...]. All keys of a view share one hash tag.
APPLY_BATCH = """
local current = redis.call('GET', KEYS[1]) or '0'
if current ~= ARGV[1] then
  return redis.error_reply('STALE ' .. current)
end
local allowed = {HSET=true, HDEL=true, HINCRBY=true, ZADD=true, ZREM=true, SADD=true, SREM=true, DEL=true}
for _, op in ipairs(cjson.decode(ARGV[3])) do
  if not allowed[op[1]] then return redis.error_reply('FORBIDDEN ' .. tostring(op[1])) end
  redis.call(op[1], KEYS[op[2]], unpack(op, 3))
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""


def redis_prefix(namespace: str, projection: Projection, version: int) -> str:
    return f"{namespace}:{{{projection.name}:v{version}}}:"


@dataclass
class _KeyOps:
    """What a batch does to one key, coalesced: the last write of a field or member wins,
    increments add up, a delete clears what came before it."""

    deleted: bool = False
    hset: dict[str, str] = field(default_factory=dict)
    hincr: dict[str, int] = field(default_factory=dict)
    hdel: set[str] = field(default_factory=set)
    zadd: dict[str, float] = field(default_factory=dict)
    zrem: set[str] = field(default_factory=set)
    sadd: set[str] = field(default_factory=set)
    srem: set[str] = field(default_factory=set)

    def commands(self) -> list[list[str]]:
        found: list[list[str]] = [["DEL"]] if self.deleted else []
        if self.hdel:
            found.append(["HDEL", *sorted(self.hdel)])
        if self.hset:
            found.append(["HSET", *[x for kv in self.hset.items() for x in kv]])
        found += [["HINCRBY", f, str(d)] for f, d in self.hincr.items()]  # a zero still makes the field, as unbatched
        if self.zrem:
            found.append(["ZREM", *sorted(self.zrem)])
        if self.zadd:
            found.append(["ZADD", *[x for m, s in self.zadd.items() for x in (repr(s), m)]])
        if self.srem:
            found.append(["SREM", *sorted(self.srem)])
        if self.sadd:
            found.append(["SADD", *sorted(self.sadd)])
        return found


class BufferedRedisView:
    """Collects a batch's operations, coalesced per key, and keeps the hashes it read up to date."""

    def __init__(self, prefix: str, hashes: dict[str, dict[str, str]]) -> None:
        self.prefix = prefix
        self.hashes = hashes
        self.pending: dict[str, _KeyOps] = {}

    def _ops(self, key: str) -> _KeyOps:
        return self.pending.setdefault(key, _KeyOps())

    def hash(self, key: str) -> dict[str, str]:
        if key not in self.hashes:
            raise KeyError(f"{key} was not declared by reads(); the projector did not fetch it")
        return dict(self.hashes[key])

    def hset(self, key: str, mapping: Mapping[str, str | int | float]) -> None:
        ops, values = self._ops(key), {k: str(v) for k, v in mapping.items()}
        self.hashes.setdefault(key, {}).update(values)
        for name, value in values.items():
            ops.hset[name] = value
            ops.hincr.pop(name, None)
            ops.hdel.discard(name)

    def hdel(self, key: str, *names: str) -> None:
        ops = self._ops(key)
        for name in names:
            self.hashes.get(key, {}).pop(name, None)
            ops.hset.pop(name, None)
            ops.hincr.pop(name, None)
            ops.hdel.add(name)

    def hincrby(self, key: str, name: str, delta: int) -> None:
        ops = self._ops(key)
        current = self.hashes.setdefault(key, {})
        current[name] = str(int(current.get(name, "0")) + delta)
        if name in ops.hset or name in ops.hdel or ops.deleted:
            ops.hset[name] = str(int(ops.hset.get(name, "0")) + delta)
            ops.hdel.discard(name)
        else:
            ops.hincr[name] = ops.hincr.get(name, 0) + delta

    def zadd(self, key: str, member: str, score: float) -> None:
        ops = self._ops(key)
        ops.zadd[member] = score
        ops.zrem.discard(member)

    def zrem(self, key: str, member: str) -> None:
        ops = self._ops(key)
        ops.zadd.pop(member, None)
        ops.zrem.add(member)

    def sadd(self, key: str, member: str) -> None:
        ops = self._ops(key)
        ops.sadd.add(member)
        ops.srem.discard(member)

    def srem(self, key: str, member: str) -> None:
        ops = self._ops(key)
        ops.sadd.discard(member)
        ops.srem.add(member)

    def delete(self, key: str) -> None:
        self.hashes.pop(key, None)
        self.pending[key] = _KeyOps(deleted=True)

    def encoded(self) -> tuple[list[str], bytes]:
        """The keys (for KEYS, after the checkpoint) and the operations as one JSON argument."""
        keys, ops = [], []
        for index, (key, pending) in enumerate(self.pending.items(), start=2):
            keys.append(self.prefix + key)
            ops += [[command[0], index, *command[1:]] for command in pending.commands()]
        return keys, msgspec.json.encode(ops)


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
            hashes = {
                key: {_s(k): _s(v) for k, v in result.items()} for key, result in zip(reads, results, strict=True)
            }
        view = BufferedRedisView(self.prefix, hashes)
        for envelope in handled:
            self.projection.apply(envelope, view)
        keys, ops = view.encoded()
        try:
            await self.script(keys=[self.checkpoint_key, *keys], args=[str(expected), str(new), ops])
        except aioredis.ResponseError as e:
            if str(e).startswith("STALE"):
                raise StaleCheckpoint(f"{self.projection.name} v{self.version}: {e}") from None
            raise


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- processes ---------------------------------------------------------------------------------


class TrackingStore:
    """A process manager's (the order saga's) position: its tracking row, which it writes in the
    transaction of the events it appends. It has no view to prepare, publish, rebuild or reset; an
    operator may move it past a parked event (`apply` of no events)."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], projection: Projection) -> None:
        self.conn, self.projection, self.version = conn, projection, projection.version

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


ViewStore = SqlStore | RedisStore | TrackingStore


def store_for(
    conn: psycopg.AsyncConnection[Any],
    client: aioredis.Redis | None,
    namespace: str,
    projection: Projection,
    version: int,
) -> ViewStore:
    """Where a version of the projection keeps its view and checkpoint (not yet prepared)."""
    if projection.kind == "process":
        return TrackingStore(conn, projection)
    if isinstance(projection, SqlProjection):
        return SqlStore(conn, projection, version)
    assert isinstance(projection, RedisProjection) and client is not None
    return RedisStore(client, namespace, projection, version)

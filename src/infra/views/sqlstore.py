"""SQL views: a batch's row operations coalesced into grouped statements, applied in one
PostgreSQL transaction with the checkpoint (on the connection holding the projection's lock)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import psycopg
import psycopg.errors

from infra.delivery.partitions import partition_of
from infra.eventstore.envelope import EventEnvelope
from infra.eventstore.personal import is_token, reveal
from infra.views.base import Fingerprint, StaleCheckpoint
from infra.views.l1 import sql_statement_tokens, sql_tokens
from projections.base import SqlProjection


def version_position(projection: str, version: str) -> str:
    """SQL for a view version's checkpoint, given SQL expressions for its projection's name and
    its version: kept by partitions, the lowest of theirs (every event at or below it is applied);
    kept whole, its own; NULL before it has one. The one place this rule is written."""
    return (
        "(SELECT coalesce(min(c.position) FILTER (WHERE c.part >= 0), min(c.position)) FROM projection_checkpoints c"
        f" WHERE c.projection = {projection} AND c.version = {version})"
    )


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
        self.raw_tokens: set[str] = set()

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
        self.raw_tokens.update(sql_statement_tokens(sql))

    def tokens(self) -> set[str]:
        """What this batch may have changed, for the API processes' caches (infra.views.l1)."""
        found = set(self.raw_tokens)
        for table, key in self.rows:
            found.update(sql_tokens(table, key))
        return found

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
    " WHERE projection = %s AND version = %s AND part = %s AND position = %s RETURNING 1) SELECT 1 / count(*) FROM moved"
)
_PARTS = "SELECT part FROM projection_checkpoints WHERE projection = %s AND version = %s AND part >= 0"


class PartitionsChanged(Exception):
    """A view version kept by P partitions cannot be continued by another number of them (their
    checkpoints mean different things): changing P takes a rebuild."""


class SqlStore:
    """A SQL projection version's tables and checkpoint, written through the projector's connection
    (the one holding the projection's lock).

    With `part` (0..partitions-1) it is one partition's share of the view: its own checkpoint row,
    and only its partition's events (infra.delivery.partitions). The version's partition rows are
    made together, from the version's own checkpoint, the first time a partition takes it."""

    def __init__(
        self,
        conn: psycopg.AsyncConnection[Any],
        projection: SqlProjection,
        version: int,
        part: int = -1,
        partitions: int = 1,
    ) -> None:
        self.conn, self.projection, self.version = conn, projection, version
        self.part, self.partitions = part, partitions
        self.tables = table_names(projection, version)
        self.touched: set[str] | None = set()
        """The tokens the last `apply` touched (see `BufferedSqlView.tokens`)."""

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
            if self.part >= 0:
                await self._prepare_parts()

    async def _prepare_parts(self) -> None:
        parts = {
            row[0] for row in await (await self.conn.execute(_PARTS, (self.projection.name, self.version))).fetchall()
        }
        if not parts:
            await self.conn.execute(
                "INSERT INTO projection_checkpoints (projection, version, part, position)"
                " SELECT c.projection, c.version, g, c.position FROM projection_checkpoints c,"
                " generate_series(0, %s - 1) g WHERE c.projection = %s AND c.version = %s AND c.part = -1",
                (self.partitions, self.projection.name, self.version),
            )
        elif parts != set(range(self.partitions)):
            raise PartitionsChanged(
                f"{self.projection.name} v{self.version} runs as {len(parts)} partitions, not {self.partitions}:"
                f" rebuild it (`chronicle projections rebuild {self.projection.name}`) to change that"
            )

    async def partition_count(self) -> int:
        """How many partitions keep this version (0: it is kept whole)."""
        return len(await (await self.conn.execute(_PARTS, (self.projection.name, self.version))).fetchall())

    async def publish_views(self) -> None:
        """Points the unversioned names (what queries read) at this version's tables."""
        async with self.conn.transaction():
            for name, table in self.tables.items():
                view = f"{self.projection.schema}.{name}"
                await self.conn.execute(f"DROP VIEW IF EXISTS {view}".encode())
                await self.conn.execute(f"CREATE VIEW {view} AS SELECT * FROM {table}".encode())

    async def _revealed(self, envelopes: list[EventEnvelope]) -> list[EventEnvelope]:
        """The envelopes with their personal data opened (None where erased), for this view only:
        copies, since other lanes share the envelopes (and Redis views never see the plain values)."""
        if not any(is_token(v) for e in envelopes for v in e.data.values()):
            return envelopes
        opened = [msgspec.structs.replace(e, data=dict(e.data)) for e in envelopes]
        await reveal(self.conn, (e.data for e in opened))
        return opened

    async def checkpoint(self) -> int:
        """This partition's checkpoint; for the whole version, the lowest of its partitions' (every
        event at or below it is applied) or, kept whole, its own."""
        row = await (
            await self.conn.execute(
                "SELECT position FROM projection_checkpoints WHERE projection = %s AND version = %s AND part = %s"
                if self.part >= 0
                else "SELECT " + version_position("%s", "%s"),
                (self.projection.name, self.version, self.part)
                if self.part >= 0
                else (self.projection.name, self.version),
            )
        ).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def _mine(self, envelope: EventEnvelope) -> bool:
        return self.part < 0 or partition_of(envelope.stream_id, self.partitions) == self.part

    async def apply(self, envelopes: Sequence[EventEnvelope], expected: int, new: int) -> None:
        view = BufferedSqlView(self.tables, self.projection.keys)
        mine = [e for e in envelopes if e.type in self.projection.handles and self._mine(e)]
        for envelope in await self._revealed(mine):
            self.projection.apply(envelope, view)
        # One round trip: BEGIN, the view's statements, the checkpoint, COMMIT, all pipelined. The
        # checkpoint statement divides by zero (aborting the transaction) unless the stored
        # checkpoint is the one this batch was planned from. A batch that changes nothing in the
        # view (most batches, for a view that handles few event types) moves the checkpoint in one
        # statement, atomic on its own on this autocommit connection.
        statements = view.statements()
        self.touched = view.tokens()
        try:
            if not statements:
                await self.conn.execute(_ADVANCE, (new, self.projection.name, self.version, self.part, expected))
                return
            async with self.conn.pipeline(), self.conn.transaction(), self.conn.cursor() as cur:
                for sql, rows in statements:
                    if len(rows) == 1:
                        await cur.execute(sql, rows[0])
                    else:
                        await cur.executemany(sql, rows)
                await cur.execute(_ADVANCE, (new, self.projection.name, self.version, self.part, expected))
        except psycopg.errors.DivisionByZero:
            raise StaleCheckpoint(f"{self.projection.name} v{self.version} is no longer at {expected}") from None

    # -- Redis -------------------------------------------------------------------------------------

    async def fingerprint(self) -> Fingerprint:
        result = Fingerprint()
        for name, table in self.tables.items():
            row = await (
                await self.conn.execute(
                    f"SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '')"
                    f" FROM {table} t".encode()
                )
            ).fetchone()
            assert row is not None
            result.counts[name], result.checksums[name] = int(row[0]), str(row[1])
        return result

    async def drop(self) -> None:
        for table in self.tables.values():
            await self.conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE".encode())
        await self.conn.execute(
            "DELETE FROM projection_checkpoints WHERE projection = %s AND version = %s",
            (self.projection.name, self.version),
        )

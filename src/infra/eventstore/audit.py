"""Reading the event log for auditors: one stream, the whole log with filters, a correlation as a
causation tree, an export, and which version of a stream was current at a time or position.
Everything here reads the event store itself, the source of truth."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
import psycopg

from infra.eventstore.envelope import LOG_COLUMNS, EnvelopeReader, context_of
from infra.eventstore.personal import reveal
from infra.eventstore.recorder import GATE


class AuditEvent(msgspec.Struct):
    position: str
    event_id: uuid.UUID
    stream_id: uuid.UUID
    version: int
    type: str
    context: str
    data: dict[str, Any]
    recorded_at: datetime
    actor_id: str | None
    command: str | None
    correlation_id: uuid.UUID | None
    causation_id: uuid.UUID | None
    erased: bool = False
    """True when some of the event's personal data was erased (those fields are null)."""


class CausationNode(msgspec.Struct):
    event: AuditEvent
    caused: list[CausationNode]


class CausedBy(msgspec.Struct):
    """The events one request (its causation id) caused directly, with what they caused in turn."""

    causation_id: uuid.UUID | None
    events: list[CausationNode]


class CorrelationTree(msgspec.Struct):
    correlation_id: uuid.UUID
    event_count: int
    requests: list[CausedBy]


@dataclass(frozen=True)
class LogFilter:
    type: str | None = None
    actor: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    stream: uuid.UUID | None = None

    def sql(self) -> tuple[str, dict[str, Any]]:
        where, params = [f"notification_id < {GATE}"], dict[str, Any]()
        if self.type:
            where.append("type = %(type)s")
            params["type"] = self.type
        if self.actor:
            where.append("actor_id = %(actor)s")
            params["actor"] = self.actor
        if self.since:
            where.append("recorded_at >= %(since)s")
            params["since"] = self.since
        if self.until:
            where.append("recorded_at < %(until)s")
            params["until"] = self.until
        if self.stream:
            where.append("stream_id = %(stream)s")
            params["stream"] = self.stream
        return " AND ".join(where), params


_reader = EnvelopeReader()


def audit_event(row: tuple[Any, ...]) -> AuditEvent:
    position, event_id, stream_id, version, topic, type_, data, recorded_at, actor, command, corr, cause = row
    return AuditEvent(
        str(position),
        event_id,
        stream_id,
        version,
        type_,
        context_of(topic),
        _reader.data(bytes(data)),
        recorded_at,
        actor,
        command,
        corr,
        cause,
    )


async def opened(conn: psycopg.AsyncConnection[Any], events: list[AuditEvent]) -> list[AuditEvent]:
    """The events with their personal data opened, or null and `erased` where it was erased."""
    for event, erased in zip(events, await reveal(conn, (e.data for e in events)), strict=True):
        event.erased = erased
    return events


async def stream_events(
    conn: psycopg.AsyncConnection[Any], stream_id: uuid.UUID, after_version: int, limit: int
) -> list[AuditEvent]:
    rows = await (
        await conn.execute(
            f"SELECT {LOG_COLUMNS} FROM events WHERE stream_id = %s AND version > %s ORDER BY version LIMIT %s",
            (stream_id, after_version, limit),
        )
    ).fetchall()
    return await opened(conn, [audit_event(r) for r in rows])


async def log_events(conn: psycopg.AsyncConnection[Any], where: LogFilter, after: int, limit: int) -> list[AuditEvent]:
    condition, params = where.sql()
    rows = await (
        await conn.execute(
            f"SELECT {LOG_COLUMNS} FROM events WHERE {condition} AND notification_id > %(after)s"
            " ORDER BY notification_id LIMIT %(limit)s",
            {**params, "after": after, "limit": limit},
        )
    ).fetchall()
    return await opened(conn, [audit_event(r) for r in rows])


async def export(conn: psycopg.AsyncConnection[Any], where: LogFilter, batch: int = 2000) -> AsyncIterator[bytes]:
    """The (filtered) log as NDJSON, in order, through a server-side cursor: constant memory.
    Personal data is opened batch by batch, in the cursor's transaction."""
    condition, params = where.sql()
    encoder = msgspec.json.Encoder()
    async with conn.transaction(), conn.cursor(name="chronicle_export") as cursor:
        cursor.itersize = batch
        await cursor.execute(
            f"SELECT {LOG_COLUMNS} FROM events WHERE {condition} ORDER BY notification_id".encode(), params
        )
        while rows := await cursor.fetchmany(batch):
            events = await opened(conn, [audit_event(r) for r in rows])
            yield b"".join(encoder.encode(e) + b"\n" for e in events)


async def correlation(conn: psycopg.AsyncConnection[Any], correlation_id: uuid.UUID) -> CorrelationTree | None:
    rows = await (
        await conn.execute(
            f"SELECT {LOG_COLUMNS} FROM events WHERE correlation_id = %s AND notification_id < {GATE}"
            " ORDER BY notification_id",
            (correlation_id,),
        )
    ).fetchall()
    if not rows:
        return None
    nodes = [CausationNode(e, []) for e in await opened(conn, [audit_event(r) for r in rows])]
    by_event = {node.event.event_id: node for node in nodes}
    requests: dict[uuid.UUID | None, CausedBy] = {}
    for node in nodes:
        parent = by_event.get(node.event.causation_id) if node.event.causation_id else None
        if parent is not None:
            parent.caused.append(node)
        else:
            requests.setdefault(node.event.causation_id, CausedBy(node.event.causation_id, [])).events.append(node)
    return CorrelationTree(correlation_id, len(nodes), list(requests.values()))


async def version_at(
    conn: psycopg.AsyncConnection[Any], stream_id: uuid.UUID, *, at: datetime | None = None, position: int | None = None
) -> int | None:
    """The stream's version as it stood at a time, or at a position of the total order."""
    value: datetime | int | None
    if at is not None:
        sql, value = "recorded_at <= %s", at
    else:
        sql, value = "notification_id <= %s", position
    row = await (
        await conn.execute(f"SELECT max(version) FROM events WHERE stream_id = %s AND {sql}", (stream_id, value))
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


async def hashes(conn: psycopg.AsyncConnection[Any], positions: list[str]) -> dict[str, str]:
    """The stored hash (hex) of each event at `positions`: the one `verify` recomputes."""
    rows = await (
        await conn.execute(
            "SELECT notification_id, hash FROM events WHERE notification_id = ANY(%s)", ([int(p) for p in positions],)
        )
    ).fetchall()
    return {str(position): bytes(digest).hex() for position, digest in rows if digest is not None}

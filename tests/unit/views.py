"""Projections applied without servers: domain events become envelopes the way the relay publishes
them (the applications' transcoder, then the log's envelope reader), and a projection applies a
batch of them to the projector's own buffered views. What the buffered view would write is read
back in a form a test can state: rows inserted, columns set or added to, rows deleted, and the
commands per Redis key."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Mapper

from commands.base import make_transcoder
from infra.eventstore.envelope import EnvelopeReader, EventEnvelope, context_of
from infra.eventstore.recorder import event_type
from infra.views.redisstore import BufferedRedisView
from infra.views.sqlstore import BufferedSqlView
from projections.base import RedisProjection, SqlProjection


class Log:
    """The event log, as far as projections can tell: each recorded event gets the next position."""

    def __init__(self) -> None:
        self.mapper: Mapper[uuid.UUID] = Mapper(transcoder=make_transcoder())
        self.reader = EnvelopeReader()
        self.position = 0
        self.correlation_id = uuid.uuid4()

    def record(self, *aggregates: Aggregate) -> list[EventEnvelope]:
        """The aggregates' new events, in the order given, as envelopes."""
        found = []
        for aggregate in aggregates:
            for event in aggregate.collect_events():
                stored = self.mapper.to_stored_event(event)
                self.position += 1
                found.append(
                    EventEnvelope(
                        event_id=uuid.uuid4(),
                        position=self.position,
                        previous=self.position - 1,
                        stream_id=stored.originator_id,
                        version=stored.originator_version,
                        type=event_type(stored.topic),
                        context=context_of(stored.topic),
                        data=self.reader.data(stored.state),
                        recorded_at=datetime.now(UTC),
                        correlation_id=self.correlation_id,
                    )
                )
        return found


def at(envelope: EventEnvelope) -> datetime:
    """The domain time a projection stamps rows with for this event."""
    return datetime.fromisoformat(envelope.data["timestamp"])


# -- SQL ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Add:
    """A column incremented by `delta` (rather than set)."""

    delta: int


@dataclass
class Written:
    """What a batch writes, by logical table name."""

    inserted: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    updated: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = field(default_factory=dict)
    deleted: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    raw: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)

    def row(self, table: str) -> dict[str, Any]:
        """The one row inserted into `table`."""
        (only,) = self.inserted[table]
        return only


_INSERT = re.compile(r"INSERT INTO (\S+) \((.*?)\) VALUES")
_UPDATE = re.compile(r"UPDATE (\S+) SET (.*) WHERE (.*)")
_DELETE = re.compile(r"DELETE FROM (\S+) WHERE")


def apply_sql(projection: SqlProjection, envelopes: Iterable[EventEnvelope]) -> Written:
    """Applies one batch, as the projector does, and reads back the statements it would run."""
    view = BufferedSqlView({name: name for name in projection.tables}, projection.keys)
    for envelope in envelopes:
        if envelope.type in projection.handles:
            projection.apply(envelope, view)
    return written(view)


def written(view: BufferedSqlView) -> Written:
    """The view's statements, read back: its row operations by table, and its raw statements
    (which come last, in the order given) as they are."""
    statements = view.statements()
    row_operations = statements[: len(statements) - len(view.raw)]
    found = Written(raw=[(sql, tuple(params)) for sql, [params] in statements[len(row_operations) :]])
    for sql, rows in row_operations:
        if insert := _INSERT.match(sql):
            table, columns = insert[1], insert[2].split(", ")
            found.inserted.setdefault(table, []).extend(dict(zip(columns, row, strict=True)) for row in rows)
        elif update := _UPDATE.match(sql):
            table, sets = update[1], update[2].split(", ")
            for row in rows:
                columns = {}
                for assignment, value in zip(sets, row, strict=False):
                    column, expression = assignment.split(" = ", 1)
                    columns[column] = Add(value) if "+" in expression else value
                found.updated.setdefault(table, {})[tuple(row[len(sets) :])] = columns
        elif delete := _DELETE.match(sql):
            found.deleted.setdefault(delete[1], []).extend(tuple(row) for row in rows)
        else:
            raise AssertionError(f"a row operation the test cannot read: {sql}")
    return found


# -- Redis -------------------------------------------------------------------------------------


def apply_redis(
    projection: RedisProjection, envelopes: Iterable[EventEnvelope], hashes: dict[str, dict[str, str]] | None = None
) -> BufferedRedisView:
    """Applies one batch to a view whose hashes are `hashes` (others the batch reads are empty),
    as the projector does after fetching what `reads` names."""
    envelopes = [e for e in envelopes if e.type in projection.handles]
    fetched = {key: {} for e in envelopes for key in projection.reads(e)} | (hashes or {})
    view = BufferedRedisView("", fetched)
    for envelope in envelopes:
        projection.apply(envelope, view)
    return view


def increments(view: BufferedRedisView, key: str) -> dict[str, int]:
    """The HINCRBYs the batch sends to one key, by field (a zero still creates the field)."""
    return {args[0]: int(args[1]) for command, *args in commands(view).get(key, []) if command == "HINCRBY"}


def commands(view: BufferedRedisView) -> dict[str, list[list[str]]]:
    """The commands the batch sends, per key (relative to the view), in the order they run."""
    keys, encoded = view.encoded()
    found: dict[str, list[list[str]]] = {}
    for command, index, *args in msgspec.json.decode(encoded):
        found.setdefault(keys[index - 2], []).append([command, *args])
    return found

"""What a projection is: the events it handles and what each does to its view, written against a
small view interface. The projector (infra.delivery.projector) feeds it events in order, applies a batch and
the checkpoint atomically, and never hands it an event twice.

A projection's `version` names its view: changing what a projection writes means a new version,
which is built beside the live one and switched in (`chronicle projections rebuild`).
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any, ClassVar, Literal, Protocol

from infra.eventstore.envelope import EventEnvelope


class SqlView(Protocol):
    """Writes to the projection's own tables, applied in one transaction with the checkpoint.

    Row operations (by the table's key, see `SqlProjection.keys`) are coalesced per batch: an
    update of a row inserted in the same batch folds into the insert, increments add up, the last
    write of a column wins. They are applied before `execute` statements, which run in the order
    given: a projection uses `execute` for what rows cannot say (array operations, subqueries), and
    such statements must not depend on the order of row operations beyond "the batch's rows exist".
    In `sql`, `{name}` stands for the table `name` of this view version.
    """

    def insert(self, table: str, row: Mapping[str, Any]) -> None:
        """Adds a row unless one with its key exists."""

    def update(self, table: str, key: Sequence[Any], columns: Mapping[str, Any]) -> None: ...

    def increment(self, table: str, key: Sequence[Any], column: str, delta: int) -> None: ...

    def delete(self, table: str, key: Sequence[Any]) -> None: ...

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...


class RedisView(Protocol):
    """Redis operations on the view's own keys, applied in one Lua script with the checkpoint.

    `hash` reads a hash as it stands with this batch's earlier operations applied (the projector
    fetched the keys named by `Projection.reads` before the batch)."""

    def hash(self, key: str) -> dict[str, str]: ...

    def hset(self, key: str, mapping: Mapping[str, str | int | float]) -> None: ...

    def hdel(self, key: str, *fields: str) -> None: ...

    def hincrby(self, key: str, field: str, delta: int) -> None: ...

    def zadd(self, key: str, member: str, score: float) -> None: ...

    def zrem(self, key: str, member: str) -> None: ...

    def sadd(self, key: str, member: str) -> None: ...

    def srem(self, key: str, member: str) -> None: ...

    def delete(self, key: str) -> None: ...


class EventConsumer(ABC):
    """What the delivery runtime (infra.delivery.projector) feeds events to, in the log's order: a
    projection (builds a view) or a process manager (acts on events). `handles` names the event
    types it reads; every other event only moves its position."""

    name: ClassVar[str]
    version: ClassVar[int] = 1
    kind: ClassVar[Literal["sql", "redis", "process"]]
    handles: ClassVar[frozenset[str]]
    description: ClassVar[str] = ""
    partitioned: ClassVar[bool] = False
    """True when every row of the view depends on the events of one aggregate only: the view can
    then be kept by P partitions of the log (by stream id), in several processes at once."""


class Projection(EventConsumer):
    """Builds a read model. It may be rebuilt, reset and replayed from the log at will: applying
    history again only rebuilds the view."""


class ProcessManager(EventConsumer):
    """Acts on events by appending new ones (the order saga). Its position is its tracking row,
    written in the transaction of what it appends. It is never rebuilt, reset or replayed: history
    run through it again would act again."""

    kind = "process"


class SqlProjection(Projection):
    kind = "sql"
    schema: ClassVar[str]
    tables: ClassVar[dict[str, str]]
    """Logical table name -> `CREATE TABLE {name} (...)`, plus any `CREATE INDEX ... ON {name}`
    statements after a `;`. The projector creates them for each version it builds."""
    keys: ClassVar[dict[str, tuple[str, ...]]]
    """Logical table name -> the columns of its primary key (for row operations)."""

    @abstractmethod
    def apply(self, event: EventEnvelope, view: SqlView) -> None: ...


class RedisProjection(Projection):
    kind = "redis"

    def reads(self, event: EventEnvelope) -> list[str]:
        """Keys (relative to the view) whose hashes `apply` will read for this event."""
        return []

    @abstractmethod
    def apply(self, event: EventEnvelope, view: RedisView) -> None: ...


# -- helpers for reading envelope data (plain JSON values) ---------------------------------------


def uuid_or_none(value: Any) -> uuid.UUID | None:
    return None if value in (None, "") else uuid.UUID(str(value))


def date_or_none(value: Any) -> date | None:
    return None if value in (None, "") else date.fromisoformat(str(value))


def when(event: EventEnvelope) -> datetime:
    """The domain time of the event (its `timestamp`), else when it was recorded."""
    stamp = event.data.get("timestamp")
    return datetime.fromisoformat(stamp) if isinstance(stamp, str) else event.recorded_at


# -- helpers for the queries that read views ------------------------------------------------------


def contains(text: str) -> str:
    """An ILIKE pattern matching `text` anywhere, its own wildcards taken literally."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"

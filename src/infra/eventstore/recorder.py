"""Chronicle's PostgreSQL event store, as an eventsourcing persistence module.

Applications use it through the library's own seams (recorders and an infrastructure factory), so
the repository, snapshots, upcasting and notification log keep working. What differs from the
library's stock recorder:

- **Writers never serialize.** No `LOCK TABLE`, no sequence in the order, no `NOTIFY` inside the
  append: an append is one statement, one round trip, in its own transaction.
- **Readers still get one gap-free total order.** Every event's `notification_id` is its writer's
  top-level transaction id shifted left by `TXN_SHIFT` bits, plus its index in the append. Readers
  see only events below the visibility gate (`GATE` below): events of transactions that have all
  finished. Whatever commits later sorts after everything a reader has already seen, so a reader
  that moves its checkpoint forward can never skip an event that commits late.
- **Who and why.** Every event stores its event id, the actor, the command, the correlation id and
  the causation id (`AppendMeta`, passed as `meta=` to `Application.save`), and the trace context
  of the span that appended it (W3C traceparent; infra.observe.tracing).

Readers are woken by a `NOTIFY` that each process sends after its appends (coalesced, outside the
appending transaction, by `AppendNotifier`); they must also poll, because a notification is only a
hint.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, NamedTuple, Protocol, TypeVar, cast
from uuid import UUID

import psycopg
import psycopg.errors
import psycopg.pq
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    IntegrityError,
    Mapper,
    Notification,
    OperationalError,
    PersistenceError,
    ProcessRecorder,
    ProgrammingError,
    StoredEvent,
    Subscription,
    Tracking,
    TrackingRecorder,
    Transcoder,
)
from eventsourcing.utils import Environment, EnvType, resolve_topic, retry

from commands.library import ListeningSubscription
from infra.eventstore.personal import PersonalDataMapper, SubjectKeys
from infra.eventstore.tamper import event_hash
from infra.observe import tracing
from infra.observe.metrics import APPEND_SECONDS, APPENDED_EVENTS

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

TXN_SHIFT = 20
MAX_EVENTS_PER_APPEND = 1 << TXN_SHIFT
GATE = f"(pg_snapshot_xmin(pg_current_snapshot())::text::bigint << {TXN_SHIFT})"
NOTIFY_CHANNEL = "chronicle_events"
HEAD = f"SELECT max(notification_id) FROM events WHERE notification_id < {GATE}"
# For each position: the events after it that readers can see (counted up to a cap, so a far-behind
# consumer costs a bounded scan) and the age of the first of them.
LAGS = (
    "SELECT u.p, (SELECT count(*) FROM (SELECT 1 FROM events WHERE notification_id > u.p"
    f" AND notification_id < {GATE} LIMIT %(cap)s) s), greatest(0, coalesce(extract(epoch FROM clock_timestamp() -"
    f" (SELECT recorded_at FROM events WHERE notification_id > u.p AND notification_id < {GATE}"
    " ORDER BY notification_id LIMIT 1)), 0))"
    " FROM unnest(%(positions)s::bigint[]) AS u(p)"
)
_BASE_ID = f"(pg_current_xact_id()::text::bigint << {TXN_SHIFT})"
_COLUMNS = (
    "notification_id, event_id, stream_id, version, topic, type, data, recorded_at,"
    " actor_id, command, correlation_id, causation_id, hash, trace_parent"
)

INSERT_ONE = (
    f"INSERT INTO events ({_COLUMNS}) "
    f"VALUES ({_BASE_ID}, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "RETURNING notification_id"
)
_UNNEST = (
    "FROM unnest(%s::uuid[], %s::uuid[], %s::bigint[], %s::text[], %s::text[], %s::bytea[], %s::bytea[])"
    " WITH ORDINALITY AS e(event_id, stream_id, version, topic, type, data, hash, ord) "
)
# Appends only if none of the given streams has moved past the given version: the command read
# those aggregates (e.g. the project of a task) and decided on that state.
MOVED = (
    "SELECT 1 FROM unnest(%s::uuid[], %s::bigint[]) AS d(stream_id, version)"
    " JOIN events x ON x.stream_id = d.stream_id AND x.version > d.version"
)
_GUARD = f"WHERE NOT EXISTS ({MOVED}) "


# The common guarded append: one event, one aggregate read.
INSERT_ONE_GUARDED = (
    f"INSERT INTO events ({_COLUMNS}) "
    f"SELECT {_BASE_ID}, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s "
    "WHERE NOT EXISTS (SELECT 1 FROM events x WHERE x.stream_id = %s AND x.version > %s) "
    "RETURNING notification_id"
)


def insert_many(*, guarded: bool, offset: bool = False) -> str:
    """With `offset`, the first parameter is where this statement's indexes start within the
    transaction (positions are the transaction id and an index: statements after the first of
    one transaction must not reuse indexes)."""
    return (
        f"INSERT INTO events ({_COLUMNS}) "
        f"SELECT {_BASE_ID} + {'%s + ' if offset else ''}e.ord - 1, e.event_id, e.stream_id, e.version, e.topic, e.type, e.data,"
        " %s, %s, %s, %s, %s, e.hash, %s "
        + _UNNEST
        + (_GUARD if guarded else "")
        + "ORDER BY e.ord RETURNING notification_id"
    )


def with_key(insert: str) -> str:
    """The same append, and in the same statement the idempotency key of the command that caused it."""
    return (
        f"WITH appended AS ({insert}), "
        "claimed AS (INSERT INTO idempotency_keys (scope, key, request_hash, status, aggregate_id, version,"
        " position) SELECT %s, %s, %s, %s, %s, %s, max(notification_id) FROM appended HAVING count(*) > 0) "
        "SELECT notification_id FROM appended ORDER BY notification_id"
    )


class DependencyChanged(IntegrityError):
    """An aggregate the command read (but did not write) changed before the append: nothing was
    stored, and the command should be decided again on fresh state."""


class AppendMeta(Protocol):
    """Who and why, recorded with every event of one append (`commands.base.Context` is one)."""

    @property
    def actor_id(self) -> str | None: ...

    @property
    def command(self) -> str | None: ...

    @property
    def correlation_id(self) -> UUID | None: ...

    @property
    def causation_id(self) -> UUID | None: ...

    @property
    def trace_parent(self) -> str | None: ...


class IdempotencyClaim(Protocol):
    """An Idempotency-Key to record with an append; see migration 0002."""

    @property
    def scope(self) -> str: ...

    @property
    def key(self) -> str: ...

    @property
    def request_hash(self) -> bytes: ...

    @property
    def status(self) -> int: ...

    @property
    def aggregate_id(self) -> UUID: ...

    @property
    def version(self) -> int: ...


@dataclass(frozen=True)
class Meta:
    actor_id: str | None = None
    command: str | None = None
    correlation_id: UUID | None = None
    causation_id: UUID | None = None
    trace_parent: str | None = None


NO_META = Meta()


def new_event_id() -> UUID:
    """A UUIDv7: time-ordered, so the event-id index grows at its right edge."""
    value = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return UUID(int=value)


@lru_cache(maxsize=4096)
def event_type(topic: str) -> str:
    """`domain.work:Task.Assigned` -> `Task.Assigned`: the name auditors and subjects use."""
    return topic.rpartition(":")[2]


# -- the database: one pool per process, shared by every recorder -----------------------------


@dataclass
class _Pooled:
    conn: psycopg.Connection[Any]
    cursor: psycopg.Cursor[Any]


class EventStoreDatabase:
    """The process's PostgreSQL connections for the event store, and its append notifier.

    The pool is a LIFO stack of autocommit connections bounded by a semaphore: appends are one
    statement each, so a checkout must cost next to nothing (psycopg_pool's richer bookkeeping cost
    a fifth of the append rate in `chronicle bench appends`). A connection that broke, or that was
    left inside a transaction, is closed instead of returned.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 16,
        idle_in_transaction_timeout_ms: int = 5000,
        connect_timeout: float = 30.0,
    ) -> None:
        self.url = url
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        # A writer that stalls inside a transaction holds the visibility gate for every reader;
        # the server ends such a transaction after this long.
        self._options = f"-c idle_in_transaction_session_timeout={int(idle_in_transaction_timeout_ms)}"
        self._idle: collections.deque[_Pooled] = collections.deque()
        self._slots = threading.BoundedSemaphore(pool_size)
        self.notifier = AppendNotifier(url)
        self.subject_keys = SubjectKeys(self.connection)
        self._closed = False
        # Connections checked out, and threads waiting for one (sampled into metrics; see infra.observe).
        self.in_use = 0
        self.waiting = 0
        self._counting = threading.Lock()

    @property
    def closed(self) -> bool:
        return self._closed

    def open(self) -> None:
        """Checks that the server answers; connections are made as they are needed."""
        with self.connection() as conn:
            conn.execute("SELECT 1")

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        with self._pooled() as pooled:
            yield pooled.conn

    @contextlib.contextmanager
    def cursor(self) -> Iterator[psycopg.Cursor[Any]]:
        """A reused binary cursor on a pooled connection: the cheapest way to run one statement."""
        with self._pooled() as pooled:
            yield pooled.cursor

    @contextlib.contextmanager
    def _pooled(self) -> Iterator[_Pooled]:
        if self._closed:
            raise PersistenceError("the event store database has been closed")
        with self._counting:
            self.waiting += 1
        try:
            acquired = self._slots.acquire(timeout=self.connect_timeout)
        finally:
            with self._counting:
                self.waiting -= 1
        if not acquired:
            raise OperationalError(f"no event store connection free within {self.connect_timeout}s")
        with self._counting:
            self.in_use += 1
        pooled: _Pooled | None = None
        try:
            pooled = self._checkout()
            yield pooled
        except psycopg.errors.UniqueViolation as e:
            raise IntegrityError(str(e)) from e
        except (psycopg.OperationalError, psycopg.InterfaceError) as e:
            raise OperationalError(str(e)) from e
        except psycopg.Error as e:
            raise PersistenceError(str(e)) from e
        finally:
            if pooled is not None:
                self._checkin(pooled)
            self._slots.release()
            with self._counting:
                self.in_use -= 1

    def _checkout(self) -> _Pooled:
        while True:
            try:
                pooled = self._idle.pop()
            except IndexError:
                conn = psycopg.connect(
                    self.url, autocommit=True, options=self._options, connect_timeout=int(self.connect_timeout)
                )
                return _Pooled(conn, conn.cursor(binary=True))
            if not (pooled.conn.closed or pooled.conn.broken):
                return pooled
            pooled.conn.close()

    def _checkin(self, pooled: _Pooled) -> None:
        conn = pooled.conn
        reusable = (
            not conn.closed
            and not conn.broken
            and not self._closed
            and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        )
        if reusable:
            self._idle.append(pooled)
        else:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def close(self) -> None:
        self._closed = True
        self.notifier.close()
        while self._idle:
            with contextlib.suppress(psycopg.Error, IndexError):
                self._idle.pop().conn.close()


class AppendNotifier:
    """Sends `NOTIFY chronicle_events` after appends, at most once per `interval`, off the write path.

    A NOTIFY inside the appending transaction would take PostgreSQL's cluster-wide notify lock at
    every commit and serialize all writers again. Here appends only set a flag; one thread per
    process turns bursts of appends into one notification. It is a wake-up hint: readers also poll.
    """

    def __init__(self, url: str, interval: float = 0.002) -> None:
        self.url = url
        self.interval = interval
        self._pending = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def poke(self) -> None:
        self._pending.set()
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._closed:
                    self._thread = threading.Thread(target=self._run, name="append-notifier", daemon=True)
                    self._thread.start()

    def close(self) -> None:
        self._closed = True
        self._pending.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        cursor: psycopg.Cursor[Any] | None = None
        while not self._closed:
            self._pending.wait()
            if self._closed:
                break
            self._pending.clear()
            try:
                if conn is None or cursor is None or conn.closed:
                    conn = psycopg.connect(self.url, autocommit=True)
                    cursor = conn.cursor()  # one cursor for every notification: making one costs more than sending
                cursor.execute(f"NOTIFY {NOTIFY_CHANNEL}")
            except psycopg.Error as e:  # a lost hint only delays readers, who also poll
                log.warning("could not send the append notification (%s); readers will poll", e)
                conn = None
                time.sleep(0.5)
            time.sleep(self.interval)
        if conn is not None:
            conn.close()


# -- recorders --------------------------------------------------------------------------------


class ChronicleAggregateRecorder(AggregateRecorder):
    """Snapshots (and any other per-aggregate sequence): a plain table keyed by (stream, version)."""

    def __init__(self, database: EventStoreDatabase, table: str = "snapshots") -> None:
        self.database = database
        self.table = table
        self._select = f"SELECT stream_id, version, topic, data FROM {table} WHERE stream_id = %s"
        self._insert = (
            f"INSERT INTO {table} (stream_id, version, topic, data) "
            "SELECT * FROM unnest(%s::uuid[], %s::bigint[], %s::text[], %s::bytea[])"
        )

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        if stored_events:
            with self.database.connection() as conn:
                conn.execute(self._insert, _columns(stored_events))
        return None

    def report_ignored(self, stream_id: UUID, version: int, detail: str, found_by: str) -> None:
        """Records a snapshot found to disagree with its stream's events (commands.snapshots)."""
        with self.database.connection() as conn:
            conn.execute(
                "INSERT INTO ignored_snapshots (stream_id, version, detail, found_by) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (stream_id, version) DO UPDATE SET last_found_at = now()",
                (stream_id, version, detail, found_by),
            )

    def snapshot_keys(self) -> Iterator[tuple[UUID, int]]:
        """The (stream, version) of every snapshot, in order."""
        with self.database.connection() as conn:
            rows = conn.execute(f"SELECT stream_id, version FROM {self.table} ORDER BY stream_id, version").fetchall()
        yield from ((r[0], r[1]) for r in rows)

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        return select_stream(self.database, self._select, originator_id, gt=gt, lte=lte, desc=desc, limit=limit)


_retry_reads: Callable[[F], F] = retry((OperationalError,), max_attempts=5, wait=0.2)
"""Reads are idempotent: a dropped connection is retried on a fresh one."""


@_retry_reads
def select_stream(
    database: EventStoreDatabase,
    select: str,
    originator_id: UUID | str,
    *,
    gt: int | None,
    lte: int | None,
    desc: bool,
    limit: int | None,
) -> list[StoredEvent]:
    sql, params = select, list[Any]([originator_id])
    if gt is not None:
        sql += " AND version > %s"
        params.append(gt)
    if lte is not None:
        sql += " AND version <= %s"
        params.append(lte)
    sql += " ORDER BY version DESC" if desc else " ORDER BY version"
    if limit is not None:
        sql += " LIMIT %s"
        params.append(limit)
    with database.connection() as conn:
        rows = conn.execute(sql, params).fetchall()
    return [StoredEvent(originator_id=r[0], originator_version=r[1], topic=r[2], state=bytes(r[3])) for r in rows]


class ChronicleApplicationRecorder(ApplicationRecorder):
    """The events table: appends without serializing writers, reads in one gap-free total order."""

    def __init__(self, database: EventStoreDatabase) -> None:
        self.database = database
        self._select = "SELECT stream_id, version, topic, data FROM events WHERE stream_id = %s"

    # writing

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        """Appends `stored_events` (with the caller's `meta`, and atomically its `tracking` position,
        `idempotency` claim and `conditions`). With no events, records the tracking position alone,
        under the same conditions."""
        if not stored_events and kwargs.get("tracking") is None:
            return []
        if not stored_events and kwargs.get("idempotency") is not None:
            raise ProgrammingError("an idempotency key is recorded with the events it caused; there are none")
        if len(stored_events) > MAX_EVENTS_PER_APPEND:
            raise ProgrammingError(f"at most {MAX_EVENTS_PER_APPEND} events fit in one append")
        meta: AppendMeta = kwargs.get("meta") or NO_META
        event_ids = [new_event_id() for _ in stored_events]
        recorded_at = datetime.now(UTC)
        started = time.perf_counter()
        ids = self._append(
            stored_events,
            event_ids,
            recorded_at,
            meta,
            kwargs.get("tracking"),
            kwargs.get("idempotency"),
            kwargs.get("conditions") or (),
        )
        elapsed = time.perf_counter() - started
        APPEND_SECONDS.observe(elapsed)
        # On the caller's span (a request's, in the API): a child span per append cost more than it told.
        tracing.annotate({"chronicle.append.events": len(ids), "chronicle.append.seconds": elapsed})
        if ids:
            APPENDED_EVENTS.inc(len(ids))
            self.database.notifier.poke()
        return ids

    def _append(
        self,
        events: Sequence[StoredEvent],
        event_ids: list[UUID],
        recorded_at: datetime,
        meta: AppendMeta,
        tracking: Tracking | None,
        claim: IdempotencyClaim | None,
        conditions: Sequence[tuple[UUID, int]],
    ) -> list[int]:
        """One attempt, and on a lost connection a careful second one.

        If the connection drops during the commit we cannot know whether the append landed. The
        event ids were chosen here, so looking them up tells: found means it committed.
        """
        try:
            return self._execute_append(events, event_ids, recorded_at, meta, tracking, claim, conditions)
        except OperationalError:
            log.warning("connection lost while appending; checking whether the append landed")
            time.sleep(0.2)
            landed = self._ids_of(event_ids)
            if landed:
                return landed
            return self._execute_append(events, event_ids, recorded_at, meta, tracking, claim, conditions)

    def _execute_append(
        self,
        events: Sequence[StoredEvent],
        event_ids: list[UUID],
        recorded_at: datetime,
        meta: AppendMeta,
        tracking: Tracking | None,
        claim: IdempotencyClaim | None,
        conditions: Sequence[tuple[UUID, int]],
    ) -> list[int]:
        tail = (recorded_at, meta.actor_id, meta.command, meta.correlation_id, meta.causation_id)
        trace = meta.trace_parent
        if tracking is None:
            with self.database.cursor() as cur:
                return self._insert(cur, events, event_ids, tail, trace, claim, conditions)
        with self.database.connection() as conn, conn.transaction():
            insert_tracking(conn, tracking)
            if not events:
                if conditions and conn.execute(MOVED, _condition_columns(conditions)).fetchone():
                    raise DependencyChanged("an aggregate the decision read has changed; nothing was recorded")
                return []
            return self._insert(conn.cursor(binary=True), events, event_ids, tail, trace, claim, conditions)

    @staticmethod
    def _insert(
        cur: psycopg.Cursor[Any],
        events: Sequence[StoredEvent],
        event_ids: list[UUID],
        tail: tuple[Any, ...],
        trace: str | None = None,
        claim: IdempotencyClaim | None = None,
        conditions: Sequence[tuple[UUID, int]] = (),
    ) -> list[int]:
        hashes = _hashes(events, event_ids, tail)
        if len(events) == 1 and claim is None and len(conditions) <= 1:
            e = events[0]
            one = (
                event_ids[0],
                e.originator_id,
                e.originator_version,
                e.topic,
                event_type(e.topic),
                e.state,
                *tail,
                hashes[0],
                trace,
                *(conditions[0] if conditions else ()),
            )
            row = cur.execute(INSERT_ONE_GUARDED if conditions else INSERT_ONE, one).fetchone()
            if row is None:
                raise DependencyChanged("an aggregate this command read has changed since; nothing was stored")
            return [row[0]]
        sql, params = _append_statement(events, event_ids, tail, trace, hashes, conditions)
        if claim is not None:
            sql = with_key(sql)
            params = (
                *params,
                claim.scope,
                claim.key,
                claim.request_hash,
                claim.status,
                claim.aggregate_id,
                claim.version,
            )
        ids = [row[0] for row in cur.execute(sql, params).fetchall()]
        if not ids:
            raise DependencyChanged("an aggregate this command read has changed since; nothing was stored")
        return sorted(ids)

    def record_decisions(self, decisions: Sequence[Decided], tracking: Tracking) -> list[int]:
        """Several appends, each with its own who-and-why and guard, and the position of the event
        that caused the last of them, in one transaction, pipelined into one round trip: a process
        manager acting on a batch of events. All land or none: a guard that finds a stream moved
        raises `DependencyChanged`, a position already recorded `IntegrityError`; a stream's
        version taken meanwhile raises `IntegrityError` too."""
        recorded_at = datetime.now(UTC)
        started = time.perf_counter()
        statements: list[tuple[str, tuple[Any, ...]]] = []
        offset = 0
        for events, meta, conditions in decisions:
            if not events:  # decided to change nothing, on state that must still be current
                if conditions:
                    statements.append((f"SELECT 1 WHERE NOT EXISTS ({MOVED})", tuple(_condition_columns(conditions))))
                continue
            event_ids = [new_event_id() for _ in events]
            tail = (recorded_at, meta.actor_id, meta.command, meta.correlation_id, meta.causation_id)
            hashes = _hashes(events, event_ids, tail)
            _, params = _append_statement(events, event_ids, tail, meta.trace_parent, hashes, conditions)
            statements.append((insert_many(guarded=bool(conditions), offset=True), (offset, *params)))
            offset += len(events)
        with self.database.connection() as conn, conn.transaction():
            with conn.pipeline():
                tracked = conn.execute(TRACK, (tracking.application_name, tracking.notification_id))
                appended = [conn.execute(sql, params) for sql, params in statements]
            if tracked.fetchone() is None:
                raise IntegrityError(
                    f"{tracking.application_name} has already recorded position {tracking.notification_id} or later"
                )
            ids = []
            for cursor in appended:
                rows = cursor.fetchall()
                if not rows:
                    raise DependencyChanged("an aggregate a decision read has changed; nothing was recorded")
                ids += [row[0] for row in rows]
        APPEND_SECONDS.observe(time.perf_counter() - started)
        APPENDED_EVENTS.inc(len(ids))
        self.database.notifier.poke()
        return sorted(ids)

    def _ids_of(self, event_ids: list[UUID]) -> list[int]:
        with self.database.connection() as conn:
            rows = conn.execute(
                "SELECT notification_id FROM events WHERE event_id = ANY(%s) ORDER BY notification_id", (event_ids,)
            ).fetchall()
        return [r[0] for r in rows] if len(rows) == len(event_ids) else []

    # reading one stream

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        return select_stream(self.database, self._select, originator_id, gt=gt, lte=lte, desc=desc, limit=limit)

    # reading the total order

    @_retry_reads
    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        """Events below the visibility gate, in total order: what every reader may safely move past."""
        sql = f"SELECT notification_id, stream_id, version, topic, data FROM events WHERE notification_id < {GATE}"
        params: list[Any] = []
        if start is not None:
            sql += " AND notification_id >= %s" if inclusive_of_start else " AND notification_id > %s"
            params.append(start)
        if stop is not None:
            sql += " AND notification_id <= %s"
            params.append(stop)
        if topics:
            sql += " AND topic = ANY(%s)"
            params.append(list(topics))
        sql += " ORDER BY notification_id LIMIT %s"
        params.append(limit)
        with self.database.connection() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [
            Notification(id=r[0], originator_id=r[1], originator_version=r[2], topic=r[3], state=bytes(r[4]))
            for r in rows
        ]

    @_retry_reads
    def max_notification_id(self) -> int | None:
        """The head of the total order: the last event every reader can see."""
        with self.database.connection() as conn:
            row = conn.execute(HEAD).fetchone()
        return None if row is None else cast(int | None, row[0])

    def subscribe(self, gt: int | None = None, topics: Sequence[str] = ()) -> Subscription[ApplicationRecorder]:
        return ChronicleSubscription(self, gt=gt, topics=topics)


class ChronicleSubscription(ListeningSubscription[ChronicleApplicationRecorder]):
    """Follows the total order: wakes on NOTIFY and polls, because a notification is only a hint."""

    POLL_INTERVAL = 0.5

    def __init__(
        self, recorder: ChronicleApplicationRecorder, gt: int | None = None, topics: Sequence[str] = ()
    ) -> None:
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        self._listen_thread = threading.Thread(target=self._listen, daemon=True)
        self._listen_thread.start()

    def __exit__(self, *args: object, **kwargs: Any) -> None:
        try:
            super().__exit__(*args, **kwargs)
        finally:
            self._listen_thread.join()

    def _listen(self) -> None:
        try:
            with psycopg.connect(self.recorder.database.url, autocommit=True) as conn:
                conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                while self.listening:
                    for _ in conn.notifies(timeout=self.POLL_INTERVAL, stop_after=1):
                        break
                    self.wake()
        except BaseException as e:
            self.fail(e)


class Lag(NamedTuple):
    events: int
    seconds: float


async def head_position(conn: psycopg.AsyncConnection[Any]) -> int:
    """The head of the total order (0 for an empty log)."""
    row = await (await conn.execute(HEAD)).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


async def was_given_out(conn: psycopg.AsyncConnection[Any], position: int) -> bool:
    """Whether the log has reached `position` (committed, gate or no gate): a command's position
    always has, since the command answers after its commit."""
    row = await (
        await conn.execute("SELECT EXISTS (SELECT 1 FROM events WHERE notification_id >= %s)", (position,))
    ).fetchone()
    return bool(row and row[0])


async def lags(conn: psycopg.AsyncConnection[Any], positions: Iterable[int], cap: int) -> dict[int, Lag]:
    """How far behind the head each position is, in one round trip."""
    rows = await (await conn.execute(LAGS, {"positions": list(positions), "cap": cap})).fetchall()
    return {int(p): Lag(int(n), round(float(s), 3)) for p, n, s in rows}


def _append_statement(
    events: Sequence[StoredEvent],
    event_ids: list[UUID],
    tail: tuple[Any, ...],
    trace: str | None,
    hashes: list[bytes],
    conditions: Sequence[tuple[UUID, int]],
) -> tuple[str, tuple[Any, ...]]:
    """One multi-row append (guarded by `conditions`), as SQL and its parameters."""
    params: tuple[Any, ...] = (*tail, trace, *_row_arrays(events, event_ids, hashes))
    if conditions:
        params = (*params, *_condition_columns(conditions))
    return insert_many(guarded=bool(conditions)), params


def _hashes(events: Sequence[StoredEvent], event_ids: list[UUID], tail: tuple[Any, ...]) -> list[bytes]:
    """Each event's hash (infra.eventstore.tamper), computed by its writer."""
    return [
        event_hash(i, e.originator_id, e.originator_version, e.topic, event_type(e.topic), e.state, *tail)
        for i, e in zip(event_ids, events, strict=True)
    ]


def _row_arrays(events: Sequence[StoredEvent], event_ids: list[UUID], hashes: list[bytes]) -> tuple[Any, ...]:
    """The per-event arrays `_UNNEST` takes, in its order."""
    stream_ids, versions, topics, states = _columns(events)
    return event_ids, stream_ids, versions, topics, [event_type(t) for t in topics], states, hashes


def _condition_columns(conditions: Sequence[tuple[UUID, int]]) -> tuple[list[UUID], list[int]]:
    return [c[0] for c in conditions], [c[1] for c in conditions]


TRACK = (
    "INSERT INTO tracking AS t (application_name, notification_id) VALUES (%s, %s)"
    " ON CONFLICT (application_name) DO UPDATE SET notification_id = excluded.notification_id"
    " WHERE t.notification_id < excluded.notification_id RETURNING notification_id"
)
Decided = tuple[Sequence[StoredEvent], "AppendMeta", Sequence[tuple[UUID, int]]]
"""One decision of a process manager: its events, who and why, and the streams it read unchanged."""


def insert_tracking(conn: psycopg.Connection[Any], tracking: Tracking) -> None:
    """Records a consumer's position; refuses to record the same or an earlier one again."""
    row = conn.execute(TRACK, (tracking.application_name, tracking.notification_id)).fetchone()
    if row is None:
        raise IntegrityError(
            f"{tracking.application_name} has already recorded position {tracking.notification_id} or later"
        )


class ChronicleTrackingRecorder(TrackingRecorder):
    def __init__(self, database: EventStoreDatabase) -> None:
        self.database = database

    def insert_tracking(self, tracking: Tracking) -> None:
        with self.database.connection() as conn:
            insert_tracking(conn, tracking)

    @_retry_reads
    def max_tracking_id(self, application_name: str) -> int | None:
        with self.database.connection() as conn:
            row = conn.execute(
                "SELECT notification_id FROM tracking WHERE application_name = %s", (application_name,)
            ).fetchone()
        return None if row is None else cast(int, row[0])


class ChronicleProcessRecorder(ChronicleTrackingRecorder, ChronicleApplicationRecorder, ProcessRecorder):
    """Events and the position of what caused them, in one transaction."""

    def __init__(self, database: EventStoreDatabase) -> None:
        ChronicleApplicationRecorder.__init__(self, database)


# -- the factory the eventsourcing Application uses ------------------------------------------


class Factory(InfrastructureFactory[ChronicleTrackingRecorder]):
    """Builds Chronicle's recorders over one shared `EventStoreDatabase`.

    The composition root passes the database in. Constructed by the library from the environment
    alone (`PERSISTENCE_MODULE=infra.eventstore.recorder`), it opens its own pool on
    `CHRONICLE_DATABASE_URL`. It never creates tables: `chronicle migrate` does.
    """

    aggregate_recorder_class = ChronicleAggregateRecorder
    application_recorder_class = ChronicleApplicationRecorder
    tracking_recorder_class = ChronicleTrackingRecorder
    process_recorder_class = ChronicleProcessRecorder

    def __init__(self, env: Environment | EnvType | None, database: EventStoreDatabase | None = None):
        super().__init__(env)
        self._owns_database = database is None
        if database is None:
            url = self.env.get("CHRONICLE_DATABASE_URL") or os.environ.get("CHRONICLE_DATABASE_URL")
            if not url:
                raise OSError("CHRONICLE_DATABASE_URL is not set")
            database = EventStoreDatabase(url)
        self.database = database

    def mapper(
        self, transcoder: Transcoder | None = None, mapper_class: type[Mapper[Any]] | None = None
    ) -> Mapper[Any]:
        """The library's mapper, but personal fields are sealed with their subject's key
        (infra.eventstore.personal) unless another mapper class is asked for."""
        if mapper_class is not None or self.env.get(self.MAPPER_TOPIC):
            return super().mapper(transcoder, mapper_class)
        mapper = cast(PersonalDataMapper, super().mapper(transcoder, PersonalDataMapper))
        mapper.keys = self.database.subject_keys
        return mapper

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        if purpose == "snapshots":
            return ChronicleAggregateRecorder(self.database, "snapshots")
        return ChronicleApplicationRecorder(self.database)

    def application_recorder(self) -> ApplicationRecorder:
        return ChronicleApplicationRecorder(self.database)

    def tracking_recorder(self, tracking_recorder_class: type[Any] | None = None) -> ChronicleTrackingRecorder:
        if tracking_recorder_class is None:
            topic = self.env.get(self.TRACKING_RECORDER_TOPIC)
            tracking_recorder_class = resolve_topic(topic) if topic else ChronicleTrackingRecorder
        if not issubclass(tracking_recorder_class, ChronicleTrackingRecorder):
            raise ProgrammingError(f"{tracking_recorder_class} is not a ChronicleTrackingRecorder")
        return cast(ChronicleTrackingRecorder, tracking_recorder_class(self.database))

    def process_recorder(self) -> ProcessRecorder:
        return ChronicleProcessRecorder(self.database)

    def close(self) -> None:
        if self._owns_database:
            self.database.close()


def _columns(events: Sequence[StoredEvent]) -> tuple[list[Any], list[int], list[str], list[bytes]]:
    return (
        [e.originator_id for e in events],
        [e.originator_version for e in events],
        [e.topic for e in events],
        [e.state for e in events],
    )

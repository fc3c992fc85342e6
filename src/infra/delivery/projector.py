"""The projector: each projection is a durable JetStream consumer that applies events in the log's
order, in batches, each batch and its checkpoint atomically.

What it guarantees, and how:
- **never twice**: an event at or below the checkpoint is acknowledged and skipped;
- **never skipped**: every event names the position of the one before it; if that is not the
  checkpoint, the missing events are read from PostgreSQL (the source of truth) and applied first,
  whether NATS lost them, the stream was purged, or they were redelivered out of order;
- **never moved past**: an event the projection cannot apply is parked in `dead_letters`, the
  projection is marked parked and stops there (the others keep running) until an operator
  retries or skips it;
- **one writer**: each projection runs where its advisory lock is held; its writes are fenced by
  the checkpoint they expect.
It survives NATS and Redis restarts: any failure other than a parked event restarts the
projection's loop (subscription included) after a pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
import redis.asyncio as aioredis
from eventsourcing import persistence as es_persistence
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from infra.delivery.checkpoints import announcement, channel
from infra.delivery.leadership import leadership, lock_key, pause, still_leading
from infra.delivery.relay import connect_nats, ensure_stream, stream_name, subjects
from infra.eventstore import envelope as envelopes
from infra.eventstore.envelope import LOG_COLUMNS, EnvelopeReader, EventEnvelope
from infra.eventstore.recorder import GATE, head_position
from infra.settings import Settings
from infra.views.stores import Parked, StaleCheckpoint, ViewStore, store_for
from projections.base import Projection, RedisProjection

log = logging.getLogger(__name__)

INFRASTRUCTURE_ERRORS = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    aioredis.ConnectionError,
    aioredis.TimeoutError,
    OSError,
    StaleCheckpoint,
    es_persistence.OperationalError,
    es_persistence.InterfaceError,
)
"""Failures of a server (or, for the saga, of the event store's pool), not of the projection: never
a reason to park an event."""
READ_AT = f"SELECT {LOG_COLUMNS} FROM events WHERE notification_id = %s"
READ_BETWEEN = (
    f"SELECT {LOG_COLUMNS} FROM events WHERE notification_id > %s AND notification_id < %s"
    f" AND notification_id < {GATE} ORDER BY notification_id LIMIT %s"
)


def consumer_name(namespace: str, projection: Projection, version: int) -> str:
    return f"{namespace}_{projection.name}_v{version}"


async def register(conn: psycopg.AsyncConnection[Any], projection: Projection) -> tuple[int, str, bool]:
    """The projection's live version, state and pause flag, registering it on first sight (at the
    code's version). Afterwards the live version changes only by a rebuild's switch."""
    await conn.execute(
        "INSERT INTO projections (projection, kind, live_version) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
        (projection.name, projection.kind, projection.version),
    )
    row = await (
        await conn.execute(
            "SELECT live_version, state, paused FROM projections WHERE projection = %s", (projection.name,)
        )
    ).fetchone()
    assert row is not None
    return int(row[0]), str(row[1]), bool(row[2])


class ProjectionRunner:
    def __init__(
        self,
        settings: Settings,
        projection: Projection,
        *,
        batch_size: int = 256,
        backfill_chunk: int = 1000,
        announcer: aioredis.Redis | None = None,
        store_factory: Any = None,
    ) -> None:
        self.announcer = announcer
        self.store_factory = store_factory
        self.settings = settings
        self.projection = projection
        self.url = settings.require_database_url()
        self.namespace = settings.namespace
        self.batch_size = batch_size
        self.backfill_chunk = backfill_chunk
        self.reader = EnvelopeReader()
        self.checkpoint = 0
        self.version = projection.version
        self.applied = 0
        self.role = f"projection {projection.name}"
        self.leading = False  # holds the projection's lock (what a process manager's side work checks)

    async def run(self, stop: asyncio.Event) -> None:
        """Runs until `stop`, restarting after any failure but a parked event."""
        key = lock_key(self.namespace, "projection", self.projection.name)
        while not stop.is_set():
            try:
                async with leadership(self.url, key, stop, self.role) as conn:
                    if conn is not None:
                        self.leading = True
                        try:
                            await self._lead(conn, stop)
                        finally:
                            self.leading = False
                await self._wait_while_paused(stop)
            except Exception as e:  # supervised: NATS, Redis or PostgreSQL went away; start over
                log.warning("%s: %s: %s; restarting in 1s", self.role, type(e).__name__, e)
                await pause(stop, 1.0)

    async def _lead(self, conn: psycopg.AsyncConnection[Any], stop: asyncio.Event) -> None:
        # A view and its checkpoint commit together, so losing the last commits in a server crash
        # only rewinds both: the projector applies those events again. No fsync wait per batch.
        await conn.execute("SET synchronous_commit = off")
        live, state, paused = await register(conn, self.projection)
        version = self.version = live
        if paused:
            return  # a rebuild is comparing or switching versions: let go of the lock for a moment
        if state == "parked":
            log.error("%s is parked on a poison event; waiting for `chronicle projections retry/skip`", self.role)
            await self._wait_unparked(conn, stop)
            return
        client = (
            aioredis.from_url(self.settings.redis_url or "") if isinstance(self.projection, RedisProjection) else None
        )
        store = self._store(conn, client, version)
        nc = await connect_nats(self.settings.nats_url or "", f"chronicle-{self.projection.name}", stop)
        try:
            await store.prepare()
            await store.publish_views()
            js = nc.jetstream()
            await ensure_stream(js, self.namespace)
            sub = await js.pull_subscribe(
                subjects(self.namespace),
                durable=consumer_name(self.namespace, self.projection, version),
                stream=stream_name(self.namespace),
                # A new consumer starts at the stream's end: the catch-up below reads the rest from the log.
                config=ConsumerConfig(
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.NEW,
                    ack_wait=60,
                    max_ack_pending=20_000,
                    max_deliver=-1,
                ),
            )
            self.checkpoint = await store.checkpoint()
            await self._catch_up(conn, store)
            log.info("%s: consuming v%d from position %d", self.role, version, self.checkpoint)
            next_look = 0.0
            while not stop.is_set():
                try:
                    msgs = await self._fetch(sub)
                except (NatsTimeout, TimeoutError):
                    msgs = []
                if msgs:
                    await self._handle(conn, store, msgs)
                if time.monotonic() >= next_look:
                    next_look = time.monotonic() + 0.5
                    if await self._should_let_go(conn, store):
                        return
        except Parked:
            await self._wait_unparked(conn, stop)
        finally:
            with contextlib.suppress(Exception):
                await nc.close()
            if client is not None:
                await client.aclose()

    async def _wait_while_paused(self, stop: asyncio.Event) -> None:
        """Waits, without the lock, while a rebuild holds this projection paused."""
        announced = False
        while not stop.is_set():
            async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                row = await (
                    await conn.execute("SELECT paused FROM projections WHERE projection = %s", (self.projection.name,))
                ).fetchone()
            if not (row and row[0]):
                return
            if not announced:
                log.info("%s: paused while a rebuild compares and switches versions", self.role)
                announced = True
            await pause(stop, 0.2)

    async def _should_let_go(self, conn: psycopg.AsyncConnection[Any], store: ViewStore) -> bool:
        """Lost the lock; the view was reset under us (e.g. Redis flushed); or an operator asked
        this projection to pause or switched its live version."""
        if not await still_leading(conn) or await store.checkpoint() != self.checkpoint:
            return True
        row = await (
            await conn.execute(
                "SELECT live_version, paused FROM projections WHERE projection = %s", (self.projection.name,)
            )
        ).fetchone()
        return row is None or row[0] != self.version or bool(row[1])

    async def _fetch(self, sub: Any) -> list[Msg]:
        """One message as soon as there is one, then whatever else is already waiting. (A single
        fetch of a whole batch lingers until the batch is full or its timeout passes.)"""
        msgs: list[Msg] = await sub.fetch(1, timeout=1.0)
        with contextlib.suppress(NatsTimeout, TimeoutError):
            # Short enough that nats-py does not linger for more when none is waiting.
            msgs += await sub.fetch(self.batch_size - 1, timeout=0.0005)
        return msgs

    def _store(self, conn: psycopg.AsyncConnection[Any], client: aioredis.Redis | None, version: int) -> ViewStore:
        if self.store_factory is not None:
            store: ViewStore = self.store_factory(conn)
            return store
        return store_for(conn, client, self.namespace, self.projection, version)

    async def _handle(self, conn: psycopg.AsyncConnection[Any], store: ViewStore, msgs: list[Msg]) -> None:
        try:
            await self._handle_batch(conn, store, msgs)
        except Parked:
            for msg in msgs:  # redelivered when the projection resumes
                with contextlib.suppress(Exception):
                    await msg.nak()
            raise
        for msg in msgs:
            await msg.ack()

    async def _handle_batch(self, conn: psycopg.AsyncConnection[Any], store: ViewStore, msgs: list[Msg]) -> None:
        batch = sorted([await self._decode(conn, m) for m in msgs], key=lambda e: e.position)
        pending: list[EventEnvelope] = []
        last = self.checkpoint
        for event in batch:
            if event.position <= last:
                continue
            if event.previous != last:
                await self._apply(store, pending)
                pending = []
                await self._backfill(conn, store, until=event.position)
                last = self.checkpoint
                if event.position <= last:
                    continue
            pending.append(event)
            last = event.position
        await self._apply(store, pending)

    async def _catch_up(self, conn: psycopg.AsyncConnection[Any], store: ViewStore) -> None:
        """On start, applies from the log whatever the view lacks up to the head: the stream may no
        longer hold it (purged, or the view was reset) and no new event may come to reveal the hole."""
        head = await head_position(conn)
        if head > self.checkpoint:
            await self._backfill(conn, store, until=head + 1, reason="catching up")

    async def _backfill(
        self, conn: psycopg.AsyncConnection[Any], store: ViewStore, until: int, reason: str = "events missing"
    ) -> None:
        """Applies, from the log, every event after the checkpoint and before `until`."""
        log.info("%s: %s between %d and %d; reading them from the log", self.role, reason, self.checkpoint, until)
        while True:
            rows = await (await conn.execute(READ_BETWEEN, (self.checkpoint, until, self.backfill_chunk))).fetchall()
            if not rows:
                return
            await self._apply(store, self.reader.from_rows(rows, self.checkpoint))

    async def _apply(self, store: ViewStore, events: Sequence[EventEnvelope]) -> None:
        if not events:
            return
        try:
            await store.apply(events, self.checkpoint, events[-1].position)
        except StaleCheckpoint:
            self.checkpoint = await store.checkpoint()
            raise
        except INFRASTRUCTURE_ERRORS:
            raise
        except Exception as batch_error:
            if len(events) == 1:
                await self._park(store, events[0], batch_error)
            for event in events:  # find the one that fails; keep what precedes it
                try:
                    await store.apply([event], self.checkpoint, event.position)
                except INFRASTRUCTURE_ERRORS:
                    raise
                except Exception as e:
                    await self._park(store, event, e)
                self.checkpoint = event.position
                self.applied += 1
                await self._announce()
            return
        self.checkpoint = events[-1].position
        self.applied += len(events)
        await self._announce()

    async def _announce(self) -> None:
        """Tells waiting queries (read-your-writes) that this checkpoint is committed; only a hint."""
        if self.announcer is None:
            return
        try:
            await self.announcer.publish(
                channel(self.namespace), announcement(self.projection.name, self.version, self.checkpoint)
            )
        except Exception as e:  # queries also read the checkpoint from the store
            log.debug("%s: could not announce checkpoint (%s)", self.role, e)

    async def _park(self, store: ViewStore | None, event: EventEnvelope, error: Exception) -> None:
        log.error("%s: parked at position %d (%s %s): %s", self.role, event.position, event.type, event.event_id, error)
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO dead_letters (projection, version, position, event_id, type, error, traceback)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    self.projection.name,
                    self.version,
                    event.position,
                    event.event_id,
                    event.type,
                    f"{type(error).__name__}: {error}",
                    "".join(traceback.format_exception(error)),
                ),
            )
            await conn.execute(
                "UPDATE projections SET state = 'parked', parked_at = %s, error = %s,"
                " updated_at = now() WHERE projection = %s",
                (event.position, f"{type(error).__name__}: {error}", self.projection.name),
            )
        raise Parked(event.position)

    async def _wait_unparked(self, conn: psycopg.AsyncConnection[Any], stop: asyncio.Event) -> None:
        while not stop.is_set():
            row = await (
                await conn.execute("SELECT state FROM projections WHERE projection = %s", (self.projection.name,))
            ).fetchone()
            if row is None or row[0] != "parked":
                return
            await pause(stop, 1.0)

    async def _decode(self, conn: psycopg.AsyncConnection[Any], msg: Msg) -> EventEnvelope:
        """The envelope in the message; if it cannot be read, the same event from the log."""
        try:
            return envelopes.decode(msg.data)
        except Exception as e:  # the log is the source of truth: read the event there instead
            position = (msg.headers or {}).get("Chronicle-Position", "")
            previous = (msg.headers or {}).get("Chronicle-Previous", "")
            row = None
            if position.isdigit() and previous.isdigit():
                row = await (await conn.execute(READ_AT, (int(position),))).fetchone()
            if row is None:
                foreign = EventEnvelope(
                    event_id=uuid.UUID(int=0),
                    position=int(position or 0),
                    previous=0,
                    stream_id=uuid.UUID(int=0),
                    version=0,
                    type=msg.subject,
                    context="",
                    data={},
                    recorded_at=datetime.now(UTC),
                )
                await self._park(None, foreign, ValueError(f"not a Chronicle event: {e}"))
                raise  # _park raises Parked; this only satisfies the type checker
            log.warning("%s: unreadable message at position %s (%s); using the log's copy", self.role, position, e)
            return self.reader.from_row(row, int(previous))


async def run_projections(settings: Settings, projections: list[Projection], stop: asyncio.Event) -> None:
    announcer = aioredis.from_url(settings.redis_url or "", socket_timeout=2)
    runners = [ProjectionRunner(settings, p, announcer=announcer) for p in projections]
    try:
        await asyncio.gather(*(r.run(stop) for r in runners))
    finally:
        await announcer.aclose()

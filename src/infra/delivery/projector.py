"""The projector runtime: one JetStream subscription per process, fanned out to every consumer
(projection, or a process manager) the process hosts.

A process reads the event stream once (one ephemeral pull consumer, gone when the process is),
decodes each message once, and hands each batch, in the log's order, to every consumer whose
advisory lock it holds (a *lane*). Each lane keeps its own checkpoint, committed atomically with
its view (one SQL transaction or one Lua script per batch); an event a lane does not handle only
moves its checkpoint, once per batch. The batch is acknowledged once, after every lane had it.

What each lane is guaranteed, and how:
- **never twice**: an event at or below the lane's checkpoint is skipped;
- **never skipped**: every event names the position of the one before it in the log; when that is
  not the lane's checkpoint, the missing events are read from PostgreSQL (the source of truth)
  first. A lane that could not take a batch (busy catching up, a server away, just started)
  therefore loses nothing: the next batch reveals the hole, and while the subscription is quiet
  each lane compares its checkpoint with what the relay has published. That is why acknowledging a batch is
  safe whatever each lane did with it;
- **never moved past**: an event a lane cannot apply is parked in `dead_letters`; that lane stops
  there until an operator retries or skips it, and the others go on;
- **one writer**: each lane runs where its lock is held (projections spread over processes; the
  others stand by), and its writes are fenced by the checkpoint they expect.
A server going away costs a lane its lock and its place, never an event: it takes the lock again
and resumes from its stored checkpoint. NATS going away only restarts the subscription.

With P partitions (infra.delivery.partitions), a projection that declares `partitioned` runs as P
lanes, one per partition; the process then has one subscription per partition as well (filtered to
it), beside the one for its whole-log lanes. A partition's lane follows its partition's chain of
previous positions and the relay's marks instead of the log's; the rest is the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec
import psycopg
import redis.asyncio as aioredis
from eventsourcing import persistence as es_persistence
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from infra.delivery import partitions as parts
from infra.delivery.leadership import lock_key, pause, try_lock
from infra.delivery.relay import connect_nats, ensure_stream, stream_name
from infra.eventstore import envelope as envelopes
from infra.eventstore.envelope import LOG_COLUMNS, EnvelopeReader, EventEnvelope
from infra.eventstore.recorder import GATE
from infra.observe import delivery as observed
from infra.observe import tracing
from infra.settings import Settings
from infra.views import l1
from infra.views.base import Parked, StaleCheckpoint, ViewStore
from infra.views.sqlstore import SqlStore
from infra.views.stores import store_for
from projections.base import EventConsumer, RedisProjection, SqlProjection

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
"""Failures of a server (or, for the saga, of the event store's pool), not of the consumer: never
a reason to park an event."""
READ_AT = f"SELECT {LOG_COLUMNS} FROM events WHERE notification_id = %s"
READ_BETWEEN = (
    f"SELECT {LOG_COLUMNS} FROM events WHERE notification_id > %s AND notification_id < %s"
    f" AND notification_id < {GATE} ORDER BY notification_id LIMIT %s"
)
PUBLISHED = "SELECT position FROM relay_state"
MEMBERS = "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s AND datname = current_database()"
BALANCE_S = 2.0  # how often a process compares its share of the lanes with the other members'
TEND_S = 0.5  # how often each lane checks its lock, its state and (when quiet) the log's head
QUIET_S = 1.0  # no message for this long: lanes compare their checkpoints with the log's head
OUTBOX = 1000  # announcements waiting to be sent; past it, lanes fold theirs into their next
DEFER_MAX = 20_000  # events kept for a busy lane; past it, the lane reads them from the log


class EventLog(Protocol):
    """The log as a lane reads it to fill holes: the source of truth, beside the subscription."""

    async def between(self, after: int, until: int, limit: int) -> list[EventEnvelope]:
        """Events after `after` and before `until`, in order, at most `limit`."""
        ...

    async def published(self) -> int:
        """The position up to which the relay has published every event."""
        ...


class PostgresLog:
    """The event store's log, read through a lane's own connection (the one holding its lock)."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], reader: EnvelopeReader) -> None:
        self.conn, self.reader = conn, reader

    async def between(self, after: int, until: int, limit: int) -> list[EventEnvelope]:
        rows = await (await self.conn.execute(READ_BETWEEN, (after, until, limit))).fetchall()
        return self.reader.from_rows(rows, after)

    async def published(self) -> int:
        row = await (await self.conn.execute(PUBLISHED)).fetchone()
        return int(row[0]) if row else 0


class PartitionLog:
    """One partition's share of the log: the events of `part` only. So that a lane reading a
    range with none of its events still moves through it, a range read that ends on another
    partition's event ends with a mark at that position."""

    def __init__(self, log: EventLog, part: int, partitions: int) -> None:
        self.log, self.part, self.partitions = log, part, partitions

    async def between(self, after: int, until: int, limit: int) -> list[EventEnvelope]:
        events = await self.log.between(after, until, limit)
        mine = [e for e in events if parts.partition_of(e.stream_id, self.partitions) == self.part]
        if events and (not mine or mine[-1] is not events[-1]):
            mine.append(mark(events[-1].position, mine[-1].position if mine else after))
        return mine

    async def published(self) -> int:
        return await self.log.published()


def mark(position: int, previous: int) -> EventEnvelope:
    """A mark as a partition's lane sees it: no projection handles it, so it only moves a checkpoint."""
    return EventEnvelope(
        event_id=uuid.UUID(int=position),
        position=position,
        previous=previous,
        stream_id=uuid.UUID(int=0),
        version=0,
        type=parts.MARK_TYPE,
        context="",
        data={},
        recorded_at=datetime.fromtimestamp(0, UTC),
    )


StoreFactory = Callable[[psycopg.AsyncConnection[Any], aioredis.Redis | None, EventConsumer, int], ViewStore]


async def register(conn: psycopg.AsyncConnection[Any], consumer: EventConsumer) -> tuple[int, str, bool]:
    """The consumer's live version, state and pause flag, registering it on first sight (at the
    code's version). Afterwards the live version changes only by a rebuild's switch."""
    await conn.execute(
        "INSERT INTO projections (projection, kind, live_version) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
        (consumer.name, consumer.kind, consumer.version),
    )
    row = await (
        await conn.execute(
            "SELECT live_version, state, paused FROM projections WHERE projection = %s", (consumer.name,)
        )
    ).fetchone()
    assert row is not None
    return int(row[0]), str(row[1]), bool(row[2])


class Lane:
    """One consumer hosted by a projector process. `conn` holds the consumer's advisory lock (and
    carries its SQL writes) while this process leads it; `lock` keeps the subscription's batches
    and the lane's own upkeep (catching up, checks) from running at once."""

    def __init__(self, consumer: EventConsumer, part: int | None = None, partitions: int = 1) -> None:
        self.consumer, self.part, self.partitions = consumer, part, partitions
        self.partition = observed.partition_label(part, partitions)
        self.role = f"projection {consumer.name}" + (f" [{self.partition}]" if self.partition else "")
        self.lock = asyncio.Lock()
        self.conn: psycopg.AsyncConnection[Any] | None = None
        self.store: ViewStore | None = None
        self.log: EventLog | None = None
        self.version = consumer.version
        self.checkpoint = 0
        self.parked = False
        self.retry_at = 0.0
        self.deferred: list[EventEnvelope] = []  # batches that came while the lane was busy
        self.drain: asyncio.Task[None] | None = None  # applies them once it is free
        # What the next announcement says: from where, what was touched since (None: too much to
        # name), and whether the lane was taken up since the last one.
        self.announced = 0
        self.tokens: set[str] | None = set()
        self.fresh = True

    def lead(self, store: ViewStore, log: EventLog, version: int, checkpoint: int, parked: bool = False) -> None:
        """From now on this lane applies events to `store`, from `checkpoint` on."""
        self.store, self.log, self.version, self.checkpoint, self.parked = store, log, version, checkpoint, parked
        self.announced, self.tokens, self.fresh = checkpoint, set(), True

    def touched(self, tokens: set[str] | None) -> None:
        """Notes what a batch applied to the view touched, for the next announcement."""
        if self.tokens is None or tokens is None or len(self.tokens) + len(tokens) > l1.MAX_TOKENS:
            self.tokens = None
        else:
            self.tokens |= tokens

    def announcement(self) -> l1.Announcement:
        """The announcement of the checkpoint's move since the last one (and the lane's state reset
        for the next: `unsent` puts it back if this one cannot be sent)."""
        tokens = None if self.tokens is None else sorted(self.tokens)
        found = l1.Announcement(
            self.consumer.name,
            self.version,
            self.announced,
            self.checkpoint,
            tokens,
            -1 if self.part is None else self.part,
            self.partitions,
            self.fresh,
        )
        self.announced, self.tokens, self.fresh = self.checkpoint, set(), False
        return found

    @property
    def dirty(self) -> bool:
        """Led, with something its last announcement did not say (or that was never sent)."""
        return self.leading and (self.fresh or self.tokens != set() or self.announced != self.checkpoint)

    def unsent(self, announcement: l1.Announcement) -> None:
        """An announcement that could not be sent: the next one covers its move too."""
        self.announced = min(self.announced, announcement.start)
        self.touched(None if announcement.tokens is None else set(announcement.tokens))
        self.fresh = self.fresh or announcement.fresh

    @property
    def leading(self) -> bool:
        return self.store is not None

    @property
    def live(self) -> bool:
        """Takes batches from the subscription."""
        return self.store is not None and not self.parked


def _in_order(events: Sequence[EventEnvelope]) -> list[EventEnvelope]:
    """Each position once (a redelivery; a mark where its partition's event is: the event wins), in
    the log's order."""
    unique: dict[int, EventEnvelope] = {}
    for e in events:
        if e.position not in unique or unique[e.position].type == parts.MARK_TYPE:
            unique[e.position] = e
    return sorted(unique.values(), key=lambda e: e.position)


def _surplus(leading: list[Lane], members: int) -> Lane:
    """The lane to hand over: a partition of a projection this process keeps more than its share
    of partitions of (so that the processes share it), else the last."""
    for lane in reversed(leading):
        if sum(other.consumer is lane.consumer for other in leading) > -(-lane.partitions // members):
            return lane
    return leading[-1]


class Projector:
    def __init__(
        self,
        settings: Settings,
        consumers: Sequence[EventConsumer],
        *,
        store_factory: StoreFactory | None = None,
        batch_size: int = 512,
        backfill_chunk: int = 1000,
        group: str = "projector",
    ) -> None:
        self.group = group
        self.settings = settings
        self.url = settings.require_database_url()
        self.namespace = settings.namespace
        self.partitions = settings.partitions
        self.lanes = [lane for c in consumers for lane in self._lanes_of(c)]
        self.feeds = sorted({lane.part for lane in self.lanes}, key=lambda part: -1 if part is None else part)
        self.store_factory = store_factory
        self.batch_size = batch_size
        self.backfill_chunk = backfill_chunk
        self.reader = EnvelopeReader()
        self.redis: aioredis.Redis | None = None
        self.last_message = dict.fromkeys(self.feeds, time.monotonic())
        self.drains: set[asyncio.Task[None]] = set()
        self._outbox: asyncio.Queue[list[tuple[Lane, l1.Announcement]]] = asyncio.Queue(maxsize=OUTBOX)

    def _lanes_of(self, consumer: EventConsumer) -> list[Lane]:
        if not consumer.partitioned or self.partitions == 1:
            return [Lane(consumer)]
        if not isinstance(consumer, SqlProjection):
            raise TypeError(f"{consumer.name}: only SQL projections can be partitioned")
        return [Lane(consumer, part, self.partitions) for part in range(self.partitions)]

    def _leading(self) -> observed.Lanes:
        return {
            (lane.consumer.name, lane.partition): (lane.checkpoint, lane.parked) for lane in self.lanes if lane.leading
        }

    def leads(self, name: str) -> bool:
        return any(lane.leading for lane in self.lanes if lane.consumer.name == name)

    async def run(self, stop: asyncio.Event) -> None:
        """Runs until `stop`: the subscription, and each lane's upkeep."""
        self.redis = aioredis.from_url(self.settings.redis_url or "", socket_timeout=5)
        tracing.setup(f"chronicle-{self.group}")
        try:
            for lane in self.lanes:  # before subscribing, so the subscription starts where they are
                await self._tend_once(lane)
            await asyncio.gather(
                *(self._subscribe(stop, part) for part in self.feeds),
                self._balance(stop),
                *(self._tend(lane, stop) for lane in self.lanes),
                observed.watch_projections(self.url, self._leading, stop),
                self._publish(stop),
            )
        finally:
            for task in list(self.drains):
                task.cancel()
            for lane in self.lanes:
                await self._release(lane)
            await self.redis.aclose()

    async def _balance(self, stop: asyncio.Event) -> None:
        """Spreads the lanes over the group's processes: each process is a member while it holds a
        connection named for the group; one that leads more than its share (the lanes over the
        members, rounded up) hands a lane over, and takes no free lane for a few seconds, so that
        a member with fewer lanes takes it. Assumes the members host the same consumers."""
        member = f"chronicle {self.group} member pid={os.getpid()}"
        while not stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, application_name=member
                ) as conn:
                    while not stop.is_set():
                        await pause(stop, BALANCE_S)
                        row = await (await conn.execute(MEMBERS, (f"chronicle {self.group} member %",))).fetchone()
                        members = max(1, int(row[0]) if row else 1)
                        leading = [lane for lane in self.lanes if lane.leading]
                        if len(leading) > -(-len(self.lanes) // members):
                            await self._hand_over(_surplus(leading, members))
            except psycopg.Error as e:  # PostgreSQL away: the lanes notice too; balance again later
                log.debug("%s: balancing paused (%s)", self.group, e)
                await pause(stop, 1.0)

    async def _hand_over(self, lane: Lane) -> None:
        async with lane.lock:
            if lane.leading:
                log.info("%s: handing over to a process with fewer projections", lane.role)
                await self._release(lane)
                lane.retry_at = time.monotonic() + 3 * BALANCE_S

    # -- the subscription ------------------------------------------------------------------------

    async def _subscribe(self, stop: asyncio.Event, part: int | None) -> None:
        """Reads the stream (or one partition of it) and hands each batch to every live lane of
        it; starts over after any failure (NATS away, the consumer gone). Lanes fill whatever
        passed meanwhile from the log."""
        feed = "" if part is None else f" [{part}/{self.partitions}]"
        while not stop.is_set():
            try:
                nc = await connect_nats(self.settings.nats_url or "", f"chronicle-projector-{os.getpid()}{feed}", stop)
            except Exception as e:  # told to stop while NATS was away
                log.debug("projector: no NATS connection (%s)", e)
                return
            try:
                js = nc.jetstream()
                partitions = await ensure_stream(
                    js,
                    self.namespace,
                    self.settings.stream_replicas,
                    self.partitions,
                    max_age_days=self.settings.stream_max_age_days,
                )
                if part is not None and partitions != self.partitions:
                    # The relay makes the partitions; until it has, the lanes catch up from the log.
                    log.warning(
                        "projector%s: the stream has %d partition(s), not %d", feed, partitions, self.partitions
                    )
                    await pause(stop, 5.0)
                    continue
                # An ephemeral consumer (the server removes it once this process is gone), starting
                # at the first event some live lane of the feed lacks.
                start = await self._start_sequence(js, part)
                sub = await js.pull_subscribe(
                    parts.events_filter(self.namespace, part),
                    stream=stream_name(self.namespace),
                    config=ConsumerConfig(
                        ack_policy=AckPolicy.ALL,
                        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                        opt_start_seq=start,
                        ack_wait=60,
                        max_ack_pending=20_000,
                        inactive_threshold=30.0,
                    ),
                )
                while not stop.is_set():
                    try:
                        msgs = await self._fetch(sub)
                    except (NatsTimeout, TimeoutError):
                        continue
                    if msgs:
                        await self._dispatch(msgs, part)
                        await msgs[-1].ack()  # AckPolicy.ALL: the whole batch at once
            except Exception as e:  # supervised: start over with a new subscription
                log.warning(
                    "projector%s: subscription failed (%s: %s); subscribing again in 1s", feed, type(e).__name__, e
                )
                await pause(stop, 1.0)
            finally:
                with contextlib.suppress(Exception):
                    await nc.close()

    async def _start_sequence(self, js: JetStreamContext, part: int | None) -> int:
        """The stream sequence of the first event after the lowest live checkpoint, found by binary
        search over the positions the relay puts in each message's headers (the relay publishes in
        the log's order); past the stream's end when no live lane lacks anything. Starting early
        only costs skipped duplicates, and starting late cannot lose an event: the first event's
        `previous` then shows the hole, which the lane reads from the log."""
        info = await js.stream_info(stream_name(self.namespace))
        first, last = max(1, info.state.first_seq), info.state.last_seq
        checkpoints = [lane.checkpoint for lane in self.lanes if lane.live and lane.part == part]
        if not checkpoints:
            return last + 1
        lowest = min(checkpoints)
        low, high = first, last + 1
        while low < high:
            middle = (low + high) // 2
            try:
                position = (await js.get_msg(stream_name(self.namespace), middle)).headers or {}
            except NotFoundError:  # removed: look earlier, which is always safe
                high = middle
                continue
            if int(position.get("Chronicle-Position", "0") or 0) <= lowest:
                low = middle + 1
            else:
                high = middle
        return low

    async def _fetch(self, sub: Any) -> list[Msg]:
        """One message as soon as there is one, then whatever else is already waiting. (A single
        fetch of a whole batch lingers until the batch is full or its timeout passes.)"""
        msgs: list[Msg] = await sub.fetch(1, timeout=1.0)
        with contextlib.suppress(NatsTimeout, TimeoutError):
            # Short enough that nats-py does not linger for more when none is waiting.
            msgs += await sub.fetch(self.batch_size - 1, timeout=0.0005)
        return msgs

    async def _dispatch(self, msgs: list[Msg], part: int | None) -> None:
        """Delivers a batch in one span, continuing the first traced event and linked to each."""
        self.last_message[part] = time.monotonic()
        decode = self._decode if part is None else self._decode_partition
        traces = [(msg.headers or {}).get("traceparent") for msg in msgs] if tracing.enabled() else []
        parent = next((t for t in traces if t), None)
        with tracing.span(f"{self.group} batch", parent=parent, links=traces, kind=tracing.SpanKind.CONSUMER):
            decoded = [event for msg in msgs if (event := await decode(msg)) is not None]
            await self.deliver(decoded, part)

    async def deliver(self, events: Sequence[EventEnvelope], part: int | None = None) -> None:
        """Hands a batch of one feed (the whole log, or partition `part`), put in the log's
        order, to every live lane of that feed that is not busy, and announces the checkpoints it
        moved."""
        batch = _in_order(events)
        if not batch:
            return
        lanes = [lane for lane in self.lanes if lane.part == part and lane.live]
        ready = [lane for lane in lanes if not lane.lock.locked() and not lane.deferred]
        for lane in lanes:
            if lane not in ready:
                self._defer(lane, batch)
        moved = await asyncio.gather(*(self._offer(lane, batch) for lane in ready))
        await self._announce([lane for lane, m in zip(ready, moved, strict=True) if m])

    def _defer(self, lane: Lane, batch: list[EventEnvelope]) -> None:
        """Keeps a batch for a busy lane (its upkeep holds its lock for a moment) and applies it once
        the lane is free, so that a read waiting for it need not wait for the next batch. Past a
        bound the kept events are dropped: the next batch shows the hole, filled from the log."""
        lane.deferred += batch
        if len(lane.deferred) > DEFER_MAX:
            lane.deferred.clear()
        if lane.deferred and (lane.drain is None or lane.drain.done()):
            lane.drain = asyncio.create_task(self._drain(lane), name=lane.role)
            self.drains.add(lane.drain)
            lane.drain.add_done_callback(self.drains.discard)

    async def _drain(self, lane: Lane) -> None:
        while lane.deferred:
            async with lane.lock:  # wait for the upkeep (or another batch) to finish
                pass
            batch, lane.deferred = _in_order(lane.deferred), []
            if await self._offer(lane, batch):
                await self._announce([lane])

    async def settle(self) -> None:
        """Waits until the batches kept for busy lanes are applied."""
        while self.drains:
            await asyncio.gather(*self.drains)

    async def _offer(self, lane: Lane, batch: list[EventEnvelope]) -> bool:
        """Applies the batch to one lane; True if its checkpoint moved. A failure here costs the
        lane its lock (it resumes from its stored checkpoint), never the other lanes their batch."""
        async with lane.lock:
            if not lane.live:
                return False
            before = lane.checkpoint
            try:
                with tracing.span(f"apply {lane.consumer.name}"):
                    await self._apply_batch(lane, batch)
            except Parked:
                pass
            except Exception as e:  # a server went away, or the lane was fenced off: start the lane over
                log.warning("%s: %s: %s; taking the lane up again from its checkpoint", lane.role, type(e).__name__, e)
                await self._release(lane)
                lane.retry_at = time.monotonic() + 1.0
            return lane.checkpoint != before

    async def _decode_partition(self, msg: Msg) -> EventEnvelope | None:
        """A partition's message as its lanes see it: `previous` is the partition's previous
        event, and a mark is an event no projection handles. A message made for another number of
        partitions (before P changed) is dropped: the next one shows what the lanes lack."""
        headers = msg.headers or {}
        if headers.get("Chronicle-Partitions") != str(self.partitions):
            return None
        previous = int(headers["Chronicle-Partition-Previous"])
        if parts.is_mark(msg.subject):
            return mark(int(headers["Chronicle-Position"]), previous)
        event = await self._decode(msg, previous)
        if event is None:
            return None
        if parts.partition_of(event.stream_id, self.partitions) != parts.partition_in(msg.subject, self.namespace):
            raise RuntimeError(
                f"JetStream put stream {event.stream_id} in another partition than Chronicle computes"
                f" ({msg.subject}): their partition functions differ; stopping this partition's feed"
            )
        return event

    async def _decode(self, msg: Msg, previous: int | None = None) -> EventEnvelope | None:
        """The envelope in the message (with `previous` replaced, for a partition); if it cannot
        be read, the same event from the log. A message that is not a Chronicle event at all is
        dropped: if it hid a real one, the next event's `previous` shows the hole and the lanes read
        the event from the log."""
        if parts.is_mark(msg.subject):
            return None  # for partitions' lanes only
        try:
            event = envelopes.decode(msg.data)
            trace = (msg.headers or {}).get("traceparent")
            if previous is not None:
                event = msgspec.structs.replace(event, previous=previous)
            return msgspec.structs.replace(event, trace_parent=trace) if trace else event
        except Exception as e:  # the log is the source of truth: read the event there instead
            headers = msg.headers or {}
            position = headers.get("Chronicle-Position", "")
            previous_header = headers.get(
                "Chronicle-Previous" if previous is None else "Chronicle-Partition-Previous", ""
            )
            row = None
            if position.isdigit() and previous_header.isdigit():
                async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                    row = await (await conn.execute(READ_AT, (int(position),))).fetchone()
            if row is None:
                log.error("projector: dropped a message on %s that is not a Chronicle event (%s)", msg.subject, e)
                return None
            log.warning("projector: unreadable message at position %s (%s); using the log's copy", position, e)
            return self.reader.from_row(row, int(previous_header))

    # -- one lane ----------------------------------------------------------------------------------

    async def _apply_batch(self, lane: Lane, batch: list[EventEnvelope]) -> None:
        pending: list[EventEnvelope] = []
        last = lane.checkpoint
        for event in batch:
            if event.position <= last:
                continue
            if event.previous > last:  # events before it are missing
                await self._apply(lane, pending)
                pending = []
                await self._backfill(lane, until=event.position)
                last = lane.checkpoint
                if event.position <= last:
                    continue
            pending.append(event)
            last = event.position
        await self._apply(lane, pending)

    async def catch_up(self, lane: Lane) -> bool:
        """Applies from the log whatever the lane lacks of what the relay has published (what
        NATS lost, or what passed while the lane had no lock); True if it moved. Events the relay
        has not published yet come through the subscription: the read side runs on the live path."""
        assert lane.log is not None
        before = lane.checkpoint
        published = await lane.log.published()
        if published > lane.checkpoint:
            await self._backfill(lane, until=published + 1, reason="catching up")
        return lane.checkpoint != before

    async def _backfill(self, lane: Lane, until: int, reason: str = "events missing") -> None:
        """Applies, from the log, every event after the lane's checkpoint and before `until`."""
        assert lane.log is not None
        log.info("%s: %s between %d and %d; reading them from the log", lane.role, reason, lane.checkpoint, until)
        while events := await lane.log.between(lane.checkpoint, until, self.backfill_chunk):
            await self._apply(lane, events)

    async def _apply(self, lane: Lane, events: Sequence[EventEnvelope]) -> None:
        if not events:
            return
        assert lane.store is not None
        started = time.perf_counter()
        try:
            try:
                await lane.store.apply(events, lane.checkpoint, events[-1].position)
            finally:  # a batch that failed half-way may have written: announcing too much is harmless
                lane.touched(lane.store.touched)
        except INFRASTRUCTURE_ERRORS:
            raise
        except Exception as batch_error:
            if len(events) == 1:
                await self._park(lane, events[0], batch_error)
            for event in events:  # find the one that fails; keep what precedes it
                try:
                    try:
                        await lane.store.apply([event], lane.checkpoint, event.position)
                    finally:
                        lane.touched(lane.store.touched)
                except INFRASTRUCTURE_ERRORS:
                    raise
                except Exception as e:
                    await self._park(lane, event, e)
                lane.checkpoint = event.position
                observed.applied(lane.consumer.name, lane.partition, 1, started, lane.checkpoint)
                started = time.perf_counter()
            return
        lane.checkpoint = events[-1].position
        observed.applied(lane.consumer.name, lane.partition, len(events), started, lane.checkpoint)

    async def _park(self, lane: Lane, event: EventEnvelope, error: Exception) -> None:
        log.error("%s: parked at position %d (%s %s): %s", lane.role, event.position, event.type, event.event_id, error)
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO dead_letters (projection, version, part, position, event_id, type, error, traceback)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    lane.consumer.name,
                    lane.version,
                    -1 if lane.part is None else lane.part,
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
                (event.position, f"{type(error).__name__}: {error}", lane.consumer.name),
            )
        lane.parked = True
        raise Parked(event.position)

    async def _tend(self, lane: Lane, stop: asyncio.Event) -> None:
        """The lane's upkeep, twice a second: takes its lock when free, lets go when it must (lost
        the lock, paused or switched by a rebuild, view reset under it, unparked by an operator),
        and while the subscription is quiet catches up with the log's head."""
        while not stop.is_set():
            await pause(stop, TEND_S)
            await self._tend_once(lane)

    async def _tend_once(self, lane: Lane) -> None:
        moved = False
        async with lane.lock:
            try:
                if lane.conn is None:
                    if time.monotonic() >= lane.retry_at:
                        await self._take(lane)
                        # Taken up: say so at once (the API processes' caches let go of the view,
                        # which may have changed while no one announced it), moved or not.
                        moved = lane.leading
                elif await self._must_let_go(lane):
                    await self._release(lane)
                elif not lane.parked and time.monotonic() - self.last_message[lane.part] >= QUIET_S:
                    moved = await self.catch_up(lane)
            except Parked:
                pass
            except Exception as e:  # a server is away: try again in a moment
                log.warning("%s: %s: %s; trying again in 1s", lane.role, type(e).__name__, e)
                await self._release(lane)
                lane.retry_at = time.monotonic() + 1.0
        if moved or lane.dirty:  # moved, taken up, or an announcement that could not be sent
            await self._announce([lane])

    async def _take(self, lane: Lane) -> None:
        """Takes the lane's lock if no other process holds it. What the view lacks then comes from
        the subscription, or from the log when its events show a hole or when it is quiet."""
        whole = lock_key(self.namespace, "projection", lane.consumer.name)
        if lane.part is None:
            conn = await try_lock(self.url, whole, lane.role)
        else:  # the partitions share the projection's lock, which a lane of the whole would hold alone
            key = lock_key(self.namespace, "projection", lane.consumer.name, str(lane.part))
            conn = await try_lock(self.url, key, lane.role, shared=whole)
        if conn is None:
            lane.retry_at = time.monotonic() + 1.0
            return
        lane.conn = conn
        # A view and its checkpoint commit together, so losing the last commits in a server crash
        # only rewinds both: the lane applies those events again. No fsync wait per batch.
        await conn.execute("SET synchronous_commit = off")
        live, state, paused = await register(conn, lane.consumer)
        if paused:  # a rebuild is comparing or switching versions: let go of the lock for a moment
            await self._release(lane)
            return
        store = self._store(conn, lane, live)
        await store.prepare()
        if lane.part is None and isinstance(store, SqlStore) and await store.partition_count():
            log.error(
                "%s: v%d is kept by partitions (CHRONICLE_PARTITIONS was > 1): run with the same number of"
                " partitions, or rebuild it to keep it whole",
                lane.role,
                live,
            )
            await self._release(lane)
            lane.retry_at = time.monotonic() + 10.0
            return
        await store.publish_views()
        source: EventLog = PostgresLog(conn, self.reader)
        if lane.part is not None:
            source = PartitionLog(source, lane.part, lane.partitions)
        parked = state == "parked" and (lane.part is None or await self._parked_part(conn, lane))
        lane.lead(store, source, live, await store.checkpoint(), parked=parked)
        if lane.parked:
            log.error("%s is parked on a poison event; waiting for `chronicle projections retry/skip`", lane.role)
            return
        log.info("%s: active, v%d from position %d", lane.role, live, lane.checkpoint)

    async def _parked_part(self, conn: psycopg.AsyncConnection[Any], lane: Lane) -> bool:
        """Whether this partition is the one (or one of those) that parked the projection."""
        row = await (
            await conn.execute(
                "SELECT 1 FROM dead_letters WHERE projection = %s AND part = %s AND resolved IS NULL LIMIT 1",
                (lane.consumer.name, lane.part),
            )
        ).fetchone()
        return row is not None

    async def _must_let_go(self, lane: Lane) -> bool:
        assert lane.conn is not None
        if lane.store is None:
            return True
        row = await (
            await lane.conn.execute(
                "SELECT live_version, paused, state FROM projections WHERE projection = %s", (lane.consumer.name,)
            )
        ).fetchone()
        if row is None or row[0] != lane.version or row[1] or (lane.parked and row[2] != "parked"):
            return True  # switched, paused, or retried/skipped: take the lane up afresh
        return await lane.store.checkpoint() != lane.checkpoint  # reset, or the view was flushed

    def _store(self, conn: psycopg.AsyncConnection[Any], lane: Lane, version: int) -> ViewStore:
        consumer = lane.consumer
        if lane.part is not None:
            assert isinstance(consumer, SqlProjection)
            return SqlStore(conn, consumer, version, lane.part, lane.partitions)
        client = self.redis if isinstance(consumer, RedisProjection) else None
        if self.store_factory is not None:
            return self.store_factory(conn, client, consumer, version)
        return store_for(conn, client, self.namespace, consumer, version)

    async def _release(self, lane: Lane) -> None:
        conn, lane.conn, lane.store, lane.log, lane.parked = lane.conn, None, None, None, False
        lane.deferred = []
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _announce(self, lanes: list[Lane]) -> None:
        """Tells the API processes which checkpoints are committed and what their batches touched,
        in one message: read-your-writes waits are woken by it (they also read the stores), and
        each process's cache (infra.views.l1) drops what it names. Sent one at a time, in the
        order made, so that a lane's announcements arrive in order; one that cannot be sent is
        folded into the lane's next."""
        if not lanes or self.redis is None:
            return
        made = [(lane, lane.announcement()) for lane in lanes]
        try:
            self._outbox.put_nowait(made)
        except asyncio.QueueFull:  # Redis is slow or away: the lanes' next announcements say it
            for lane, unsent in made:
                lane.unsent(unsent)

    async def _publish(self, stop: asyncio.Event) -> None:
        """Sends the announcements one at a time, in the order made (so a lane's arrive in order),
        apart from the lanes' work: a slow Redis delays the announcements, never the views. One
        that cannot be sent is folded into its lanes' next (their upkeep sends it)."""
        assert self.redis is not None
        while not stop.is_set():
            try:
                made = await asyncio.wait_for(self._outbox.get(), timeout=TEND_S)
            except TimeoutError:
                continue
            try:
                await self.redis.publish(l1.channel(self.namespace), l1.encode_announcements([a for _, a in made]))
            except Exception as e:  # queries also read the checkpoints from the stores
                log.debug("projector: could not announce checkpoints (%s)", e)
                for lane, unsent in made:
                    lane.unsent(unsent)


async def run_projections(settings: Settings, projections: Sequence[EventConsumer], stop: asyncio.Event) -> None:
    await Projector(settings, projections).run(stop)

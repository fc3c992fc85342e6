"""The relay: reads the event log in its gap-free total order and publishes every event to one
JetStream stream, exactly once in effect.

How it knows where it stopped: `relay_state` holds the position up to which every event is in the
stream (and the stream sequence of the last one). It advances only after every publish of a batch
is acknowledged by JetStream, through the connection that holds the relay's advisory lock. After a
crash between publishing and recording, the events after that position may already be in the
stream: on start the relay reads the stream's messages after the recorded sequence and does not
publish those events again. Within the stream's duplicate window `Nats-Msg-Id` (the event id)
would also drop such a repeat; the scan covers restarts after longer than that window. Consumers
are idempotent by position besides.

It wakes on `NOTIFY chronicle_events` and also polls, so a lost notification only delays. While
NATS is away it keeps trying (commands keep succeeding: the log is the outbox).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import nats
import psycopg
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig, SubjectTransform
from nats.js.errors import NotFoundError

from infra.delivery import partitions as parts
from infra.delivery.anchors import ensure_anchor_stream, publish_head
from infra.delivery.leadership import leadership, lock_key, pause, still_leading
from infra.eventstore.envelope import LOG_COLUMNS, EnvelopeReader, EventEnvelope, encode
from infra.eventstore.recorder import GATE, NOTIFY_CHANNEL
from infra.eventstore.signing import SealHead, SealKey, head_of, load_seal_key
from infra.eventstore.tamper import GENESIS, merkle_root, seal_hash
from infra.eventstore.verify import SEAL_COLUMNS
from infra.observe import metrics, tracing
from infra.observe.delivery import watch_relay
from infra.settings import Settings

log = logging.getLogger(__name__)

DUPLICATE_WINDOW_S = 120
MAX_SCAN = 100_000
READ_AFTER = (
    f"SELECT {LOG_COLUMNS}, hash, trace_parent FROM events WHERE notification_id > %s AND notification_id < {GATE}"
    " ORDER BY notification_id LIMIT %s"
)
READ_RANGE = (
    f"SELECT notification_id, hash FROM events WHERE notification_id > %s AND notification_id <= %s"
    f" AND notification_id < {GATE} ORDER BY notification_id LIMIT %s"
)


def stream_name(namespace: str) -> str:
    return f"{namespace.upper()}_EVENTS"


def subjects(namespace: str) -> str:
    return parts.events_filter(namespace, None)


def subject_of(namespace: str, envelope: EventEnvelope) -> str:
    """The stream id is the last token: the one JetStream partitions on."""
    return f"{namespace}.events.{envelope.context}.{envelope.subject_token}.{envelope.stream_id}"


def headers_of(envelope: EventEnvelope, partition_previous: int, partitions: int) -> dict[str, str]:
    return {
        "Chronicle-Partitions": str(partitions),
        "Nats-Msg-Id": str(envelope.event_id),
        "Chronicle-Position": str(envelope.position),
        "Chronicle-Previous": str(envelope.previous),
        "Chronicle-Partition-Previous": str(partition_previous),
        "Chronicle-Stream-Id": str(envelope.stream_id),
        "Chronicle-Version": str(envelope.version),
        "Chronicle-Type": envelope.type,
    }


def mark_headers(position: int, partition: int, partition_previous: int, partitions: int) -> dict[str, str]:
    return {
        "Chronicle-Partitions": str(partitions),
        "Nats-Msg-Id": f"mark-{partition}-{position}",
        "Chronicle-Position": str(position),
        "Chronicle-Partition-Previous": str(partition_previous),
    }


async def connect_nats(url: str, name: str, stop: asyncio.Event | None = None) -> NATS:
    """Connects, retrying forever (until `stop`), and reconnects forever afterwards."""
    delay = 0.5
    while True:
        try:
            return await nats.connect(
                servers=url.split(","),
                name=name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                connect_timeout=3,
                allow_reconnect=True,
            )
        except Exception as e:  # NATS is down: the log keeps the events; try again
            log.warning("%s: NATS unreachable (%s); retrying in %.1fs", name, e, delay)
            if stop is not None and stop.is_set():
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def _transform(namespace: str, partitions: int) -> SubjectTransform | None:
    if partitions == 1:
        return None
    return SubjectTransform(
        src=parts.transform_source(namespace), dest=parts.transform_destination(namespace, partitions)
    )


async def ensure_stream(
    js: JetStreamContext,
    namespace: str,
    replicas: int = 1,
    partitions: int = 1,
    *,
    reconfigure: bool = False,
    max_age_days: int = 30,
) -> int:
    """Creates the event stream with `partitions` if it is missing, and returns its number of
    partitions. With `reconfigure` (the relay) an existing stream is also brought to that
    partitioning; consumers take the stream as it is. Messages stored before a change keep their
    subjects: a partition's lane reads what it lacks of them from the log. Messages are kept
    `max_age_days` (0: for good): PostgreSQL stays the source of truth, and consumers fill what the
    stream no longer holds from the log."""
    name = stream_name(namespace)
    max_age = float(max_age_days * 86_400)
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        wanted = partitions
        await js.add_stream(
            StreamConfig(
                name=name,
                subjects=[subjects(namespace)],
                storage=StorageType.FILE,
                duplicate_window=DUPLICATE_WINDOW_S,
                num_replicas=replicas,
                max_age=max_age,
                subject_transform=_transform(namespace, wanted),
            )
        )
        return wanted
    config = info.config
    current = parts.partitions_of_destination(config.subject_transform.dest if config.subject_transform else None)
    wanted = partitions if reconfigure else current
    if current != wanted or (reconfigure and float(config.max_age or 0) != max_age):
        log.warning("relay: configuring the event stream for %d partition(s) (was %d)", wanted, current)
        config.subject_transform = _transform(namespace, wanted)
        config.max_age = max_age
        await js.update_stream(config)
    return wanted


@dataclass
class RelayState:
    """`heads[k]`: the position of partition k's last published event (or of where partitioning
    began: a lane below it reads its partition's events from the log)."""

    position: int = 0
    stream_seq: int = 0
    heads: list[int] = field(default_factory=lambda: [0])

    def partitioned(self, partitions: int) -> RelayState:
        """This state for `partitions` partitions (heads start over when the number changes)."""
        if len(self.heads) == partitions:
            return self
        return RelayState(self.position, self.stream_seq, [self.position] * partitions)


@dataclass
class LastSeal:
    seq: int = 0
    to_position: int = 0
    seal_hash: bytes = GENESIS
    head: SealHead | None = None


class Sealer:
    """Seals the log in order, range after range, each chained to the one before
    (infra.eventstore.tamper) and signed with the seal key (infra.eventstore.signing)."""

    def __init__(self, key: SealKey) -> None:
        self.key = key
        self.last = LastSeal()

    async def load(self, conn: psycopg.AsyncConnection[Any]) -> None:
        row = await (await conn.execute(f"SELECT {SEAL_COLUMNS} FROM seals ORDER BY seq DESC LIMIT 1")).fetchone()
        self.last = LastSeal(row[0], row[2], bytes(row[6]), head_of(*row)) if row else LastSeal()

    async def seal(self, conn: psycopg.AsyncConnection[Any], leaves: list[tuple[int, bytes]]) -> LastSeal:
        """Writes the seal of (last sealed position, last of `leaves`] (in the caller's transaction);
        `leaves` are the (position, hash) of every event in that range, in order."""
        seq, from_position, to_position = self.last.seq + 1, self.last.to_position, leaves[-1][0]
        root = merkle_root(leaves)
        digest = seal_hash(seq, from_position, to_position, len(leaves), root, self.last.seal_hash)
        values = (seq, from_position, to_position, len(leaves), root, self.last.seal_hash, digest)
        row = (*values, self.key.public, self.key.sign(digest))
        await conn.execute(f"INSERT INTO seals ({SEAL_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", row)
        return LastSeal(seq, to_position, digest, head_of(*row))

    async def seal_backlog(self, conn: psycopg.AsyncConnection[Any], upto: int, chunk: int = 5000) -> None:
        """Seals what was published before sealing existed (or before a crash), up to `upto`."""
        while self.last.to_position < upto:
            rows = await (await conn.execute(READ_RANGE, (self.last.to_position, upto, chunk))).fetchall()
            if not rows:
                return
            async with conn.transaction():
                sealed = await self.seal(conn, [(r[0], bytes(r[1])) for r in rows])
            self.last = sealed


class Relay:
    def __init__(
        self, settings: Settings, *, batch_size: int = 500, poll_interval: float = 0.5, publish_timeout: float = 10.0
    ) -> None:
        self.settings = settings
        self.url = settings.require_database_url()
        self.namespace = settings.namespace
        self.partitions = settings.partitions
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.publish_timeout = publish_timeout
        self.reader = EnvelopeReader()
        self.published = 0
        self.position: int | None = None  # published up to here, while leading
        self.key = load_seal_key(settings.seal_key, settings.seal_key_file)
        self._anchored = 0

    async def run(self, stop: asyncio.Event) -> None:
        tracing.setup("chronicle-relay")
        await asyncio.gather(self._run(stop), watch_relay(self.url, lambda: self.position, stop))

    async def _run(self, stop: asyncio.Event) -> None:
        key = lock_key(self.namespace, "relay")
        while not stop.is_set():
            try:
                async with leadership(self.url, key, stop, "relay") as conn:
                    if conn is not None:
                        try:
                            await self._lead(conn, stop)
                        finally:
                            self.position = None
            except (psycopg.Error, OSError) as e:
                log.warning("relay: lost PostgreSQL (%s); starting over", e)
                await pause(stop, 1.0)

    async def _lead(self, conn: psycopg.AsyncConnection[Any], stop: asyncio.Event) -> None:
        # Progress lost in a server crash only makes the relay publish a few events again, which the
        # stream scan and Nats-Msg-Id deduplicate: no fsync wait per batch.
        await conn.execute("SET synchronous_commit = off")
        nc = await connect_nats(self.settings.nats_url or "", "chronicle-relay", stop)
        wake = asyncio.Event()
        listener = asyncio.create_task(self._listen(wake, stop))
        try:
            js = nc.jetstream(timeout=self.publish_timeout)
            await self._with_retry(
                lambda: ensure_stream(
                    js,
                    self.namespace,
                    self.settings.stream_replicas,
                    self.partitions,
                    reconfigure=True,
                    max_age_days=self.settings.stream_max_age_days,
                ),
                stop,
            )
            replicas = self.settings.stream_replicas
            await self._with_retry(lambda: ensure_anchor_stream(js, self.namespace, replicas), stop)
            state = (await self._load_state(conn)).partitioned(self.partitions)
            sealer = Sealer(self.key)
            await sealer.load(conn)
            await sealer.seal_backlog(conn, state.position)
            await self._anchor(js, sealer.last)
            already = await self._with_retry(lambda: self._in_stream_after(js, state.stream_seq), stop)
            self.position = state.position
            while not stop.is_set():
                if not await still_leading(conn):
                    log.warning("relay: the lock's connection broke; stepping down")
                    return
                rows = await (await conn.execute(READ_AFTER, (state.position, self.batch_size))).fetchall()
                if not rows:
                    await self._anchor(js, sealer.last)
                    wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), self.poll_interval)
                    continue
                envelopes = self.reader.from_rows([r[:-2] for r in rows], state.position)
                traces = {r[0]: r[-1] for r in rows if r[-1]}
                heads = list(state.heads)
                try:
                    seq = await self._publish(js, envelopes, already, heads, traces)
                except Exception as e:  # NATS away or slow: the batch is published again, deduplicated
                    log.warning("relay: publishing failed (%s); retrying the batch", e)
                    await pause(stop, 1.0)
                    continue
                state = RelayState(envelopes[-1].position, max(seq, state.stream_seq), heads)
                async with conn.transaction():
                    sealed = await sealer.seal(conn, [(r[0], bytes(r[-2])) for r in rows])
                    await self._save_state(conn, state)
                sealer.last = sealed
                self.position = state.position
                metrics.RELAY_BATCHES.inc()
                await self._anchor(js, sealed)
                already.difference_update(e.position for e in envelopes)
        finally:
            listener.cancel()
            with contextlib.suppress(BaseException):
                await listener
            with contextlib.suppress(Exception):
                await nc.close()

    async def _anchor(self, js: JetStreamContext, last: LastSeal) -> None:
        """Publishes the newest seal's head to the anchor stream, unless it is there already. A head
        that cannot be published now is published with a later one (each head covers the chain
        before it), so this never holds the relay up."""
        if last.head is None or last.seq <= self._anchored:
            return
        try:
            await asyncio.wait_for(publish_head(js, self.namespace, last.head), self.publish_timeout)
        except Exception as e:  # NATS away: the seal is in PostgreSQL; its head goes out with the next one
            log.warning("relay: could not publish seal %d's head (%s); will publish a later one", last.seq, e)
            return
        self._anchored = last.seq

    async def _publish(
        self,
        js: JetStreamContext,
        envelopes: list[EventEnvelope],
        already: set[int],
        heads: list[int],
        traces: dict[int, str],
    ) -> int:
        """Publishes the batch (but what is in the stream already) and, when partitioned, a mark to
        every partition after it, in that order on one connection; moves `heads` along. Each event
        carries a `traceparent` header continuing the trace that appended it (infra.observe)."""
        futures = []
        for e in envelopes:
            partition = parts.partition_of(e.stream_id, len(heads)) if len(heads) > 1 else 0
            if e.position not in already:
                headers = headers_of(e, heads[partition], len(heads))
                trace = tracing.hop(f"publish {e.type}", traces.get(e.position))
                if trace:
                    headers["traceparent"] = trace
                futures.append(await js.publish_async(subject_of(self.namespace, e), encode(e), headers=headers))
            heads[partition] = e.position
        events = len(futures)
        if len(heads) > 1:
            head = envelopes[-1].position
            for partition, previous in enumerate(heads):
                if previous == head:
                    continue  # the batch's last event is this partition's: it says as much
                headers = mark_headers(head, partition, previous, len(heads))
                futures.append(
                    await js.publish_async(parts.mark_subject(self.namespace, partition), b"", headers=headers)
                )
        acks = await asyncio.wait_for(asyncio.gather(*futures), self.publish_timeout)
        published = sum(1 for ack in acks[:events] if not ack.duplicate)
        self.published += published
        metrics.RELAY_PUBLISHED.inc(published)
        return max((ack.seq for ack in acks), default=0)

    async def _in_stream_after(self, js: JetStreamContext, stream_seq: int) -> set[int]:
        """Positions of events already in the stream after the recorded sequence: published by a
        relay that died before it could record them."""
        info = await js.stream_info(stream_name(self.namespace))
        last = info.state.last_seq
        if last < stream_seq:
            log.warning(
                "relay: the stream holds fewer messages (%d) than recorded (%d): purged or lost; "
                "consumers will fill the hole from the log",
                last,
                stream_seq,
            )
            return set()
        if last - stream_seq > MAX_SCAN:
            log.warning("relay: %d messages after the recorded sequence; relying on deduplication", last - stream_seq)
            return set()
        found: set[int] = set()
        for seq in range(stream_seq + 1, last + 1):
            try:
                msg = await js.get_msg(stream_name(self.namespace), seq)
            except NotFoundError:
                continue
            position = (msg.headers or {}).get("Chronicle-Position")
            if position:
                found.add(int(position))
        if found:
            log.info("relay: %d events were in the stream already; not publishing them again", len(found))
        return found

    async def _load_state(self, conn: psycopg.AsyncConnection[Any]) -> RelayState:
        row = await (await conn.execute("SELECT position, stream_seq, partition_heads FROM relay_state")).fetchone()
        return RelayState(row[0], row[1], list(row[2]) or [row[0]]) if row else RelayState()

    async def _save_state(self, conn: psycopg.AsyncConnection[Any], state: RelayState) -> None:
        await conn.execute(
            "INSERT INTO relay_state (id, position, stream_seq, partition_heads) VALUES (1, %s, %s, %s)"
            " ON CONFLICT (id) DO UPDATE SET position = excluded.position, stream_seq = excluded.stream_seq,"
            " partition_heads = excluded.partition_heads, updated_at = now()",
            (state.position, state.stream_seq, state.heads),
        )

    async def _listen(self, wake: asyncio.Event, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    async for _ in conn.notifies():
                        wake.set()
            except psycopg.Error as e:  # polling covers the gap
                log.debug("relay: LISTEN connection lost (%s)", e)
                await pause(stop, 1.0)

    async def _with_retry(self, action: Any, stop: asyncio.Event) -> Any:
        while True:
            try:
                return await action()
            except Exception as e:  # NATS not ready: keep trying, the log keeps the events
                if stop.is_set():
                    raise
                log.warning("relay: JetStream not ready (%s); retrying", e)
                await pause(stop, 1.0)

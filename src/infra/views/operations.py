"""What operators do to projections: see them, rebuild them blue/green, reset them, and deal with
a parked poison event. Every change of state is written to `operations_log`.

A rebuild never stops queries: they read the live version while the new one is built from the log
(the source of truth) beside it. Once the new version has caught up with live events, the live
projector is paused for a moment, both versions are brought to the same position and compared
(row/key counts and a content checksum per table or key kind), and the switch (the live version
number, and for SQL the views queries read) is one transaction. The old version is dropped a few
seconds later, once no process can still be reading it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
import psycopg
import redis.asyncio as aioredis

from infra.delivery.leadership import lock_key
from infra.delivery.projector import register
from infra.eventstore.recorder import head_position, lags
from infra.settings import LIVE_VERSION_CACHE_S, Settings
from infra.views import l1
from infra.views.base import ViewStore
from infra.views.rebuild import Progress, open_store, replay
from infra.views.sqlstore import SqlStore
from infra.views.stores import store_for
from projections.base import EventConsumer, ProcessManager, SqlProjection

log = logging.getLogger(__name__)
GRACE_S = 2 * LIVE_VERSION_CACHE_S  # how long the old version outlives a switch: queries may read it until then
CATCH_UP_LEFT = 1000  # events still to apply before the live projector is paused for the comparison


class OperationRefused(Exception):
    """The operation cannot be done now; the message says why."""


@dataclass
class RebuildReport:
    projection: str
    live_version: int
    new_version: int
    events: int
    seconds: float
    differences: list[str] = field(default_factory=list)
    switched: bool = False
    paused_seconds: float = 0.0  # how long the live view stood still: final catch-up, compare, switch

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


class PartitionStatus(msgspec.Struct):
    """One partition of a projection kept by partitions (infra.delivery.partitions)."""

    part: int
    checkpoint: str
    lag_events: int
    lag_seconds: float
    owner: str | None = None


class ProjectionStatus(msgspec.Struct):
    name: str
    kind: str
    version: int
    state: str
    checkpoint: str
    lag_events: int
    lag_seconds: float
    error: str | None = None
    owner: str | None = None  # the process holding the projection's lock: `HOST pid=N`
    partitions: list[PartitionStatus] = msgspec.field(default_factory=list)


# -- locks ---------------------------------------------------------------------------------------


async def lock_holder(conn: psycopg.AsyncConnection[Any], key: int) -> str | None:
    """The process holding an advisory lock, as `HOST pid=N` (its address and the pid it put in its
    connection's name), or None when no process holds it."""
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    row = await (
        await conn.execute(
            "SELECT a.application_name, coalesce(host(a.client_addr), 'local') FROM pg_locks l"
            " JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted"
            " AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND l.classid = %s AND l.objid = %s",
            (unsigned >> 32, unsigned & 0xFFFFFFFF),
        )
    ).fetchone()
    if row is None:
        return None
    name, host = str(row[0] or ""), str(row[1])
    return f"{host} {name.rsplit(' ', 1)[-1]}" if "pid=" in name else host


@asynccontextmanager
async def _locked(url: str, key: int, what: str, *, wait: float = 0.0) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    conn = await psycopg.AsyncConnection.connect(
        url, autocommit=True, application_name=f"chronicle {what} pid={os.getpid()}"
    )
    try:
        deadline = time.monotonic() + wait
        while True:
            row = await (await conn.execute("SELECT pg_try_advisory_lock(%s)", (key,))).fetchone()
            if row and row[0]:
                break
            if time.monotonic() >= deadline:
                raise OperationRefused(f"{what}: another process holds it")
            await asyncio.sleep(0.1)
        yield conn
    finally:
        await conn.close()


async def _log(
    conn: psycopg.AsyncConnection[Any], operator: str, operation: str, projection: str, **detail: Any
) -> None:
    await conn.execute(
        "INSERT INTO operations_log (operator, operation, projection, detail) VALUES (%s, %s, %s, %s)",
        (operator, operation, projection, msgspec.json.encode(detail).decode()),
    )


@asynccontextmanager
async def _paused(
    url: str, settings: Settings, projection: EventConsumer
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """Pauses the live projector and holds its lock: nothing else writes the live view meanwhile."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("UPDATE projections SET paused = true WHERE projection = %s", (projection.name,))
        try:
            async with _locked(
                url,
                lock_key(settings.namespace, "projection", projection.name),
                f"projection {projection.name} (paused)",
                wait=60.0,
            ) as locked:
                yield locked
        finally:
            await conn.execute("UPDATE projections SET paused = false WHERE projection = %s", (projection.name,))


# -- status ---------------------------------------------------------------------------------------


async def live_checkpoint(
    conn: psycopg.AsyncConnection[Any], client: aioredis.Redis, namespace: str, consumer: EventConsumer
) -> tuple[int, str, int]:
    """A consumer's live version, its state, and that version's checkpoint (registering the consumer
    on first sight); reading it creates no view."""
    live, state, _ = await register(conn, consumer)
    return live, state, await store_for(conn, client, namespace, consumer, live).checkpoint()


async def checkpoints(settings: Settings, consumers: list[EventConsumer]) -> dict[str, int]:
    """Each consumer's checkpoint, in its live version."""
    client = aioredis.from_url(settings.redis_url or "")
    try:
        async with await psycopg.AsyncConnection.connect(settings.require_database_url(), autocommit=True) as conn:
            return {c.name: (await live_checkpoint(conn, client, settings.namespace, c))[2] for c in consumers}
    finally:
        await client.aclose()


async def statuses(
    settings: Settings, projections: list[EventConsumer], lag_cap: int = 1_000_000
) -> list[ProjectionStatus]:
    """`lag_cap` bounds the count of events behind each checkpoint (a count costs a scan of them)."""
    client = aioredis.from_url(settings.redis_url or "")
    try:
        async with await psycopg.AsyncConnection.connect(settings.require_database_url(), autocommit=True) as conn:
            return await statuses_on(conn, client, settings.namespace, projections, lag_cap)
    finally:
        await client.aclose()


async def statuses_on(
    conn: psycopg.AsyncConnection[Any],
    client: aioredis.Redis,
    namespace: str,
    projections: list[EventConsumer],
    lag_cap: int = 1_000_000,
) -> list[ProjectionStatus]:
    """`statuses` over a connection and a client the caller has (a running API's pools)."""
    found = []
    for projection in projections:
        live, state, position = await live_checkpoint(conn, client, namespace, projection)
        lag = (await lags(conn, [position], cap=lag_cap))[position]
        error_row = await (
            await conn.execute("SELECT error FROM projections WHERE projection = %s", (projection.name,))
        ).fetchone()
        owner = await lock_holder(conn, lock_key(namespace, "projection", projection.name))
        partitions = await _partition_statuses(conn, namespace, projection, live, lag_cap)
        if partitions:
            owner = ", ".join(sorted({p.owner for p in partitions if p.owner})) or None
        if state != "parked":
            if await lock_holder(conn, lock_key(namespace, "rebuild", projection.name)):
                state = "rebuilding"
            else:
                state = "running" if owner else "stopped"
        found.append(
            ProjectionStatus(
                projection.name,
                projection.kind,
                live,
                state,
                str(position),
                lag.events,
                lag.seconds,
                error_row[0] if error_row and state == "parked" else None,
                owner,
                partitions,
            )
        )
    return found


class ParkedEvent(msgspec.Struct):
    """The latest unresolved dead letter of a projection: the event it is parked on."""

    event_id: str
    position: str
    type: str
    error: str  # the projection's recorded error (its traceback stays in the table)
    at: datetime


async def parked_events(conn: psycopg.AsyncConnection[Any]) -> dict[str, ParkedEvent]:
    rows = await (
        await conn.execute(
            "SELECT DISTINCT ON (projection) projection, event_id, position, type, error, parked_at"
            " FROM dead_letters WHERE resolved IS NULL ORDER BY projection, id DESC"
        )
    ).fetchall()
    return {r[0]: ParkedEvent(str(r[1]), str(r[2]), r[3], r[4], r[5]) for r in rows}


async def _partition_statuses(
    conn: psycopg.AsyncConnection[Any], namespace: str, projection: EventConsumer, version: int, lag_cap: int
) -> list[PartitionStatus]:
    rows = await (
        await conn.execute(
            "SELECT part, position FROM projection_checkpoints WHERE projection = %s AND version = %s AND part >= 0"
            " ORDER BY part",
            (projection.name, version),
        )
    ).fetchall()
    found_lags = await lags(conn, [int(r[1]) for r in rows], cap=lag_cap)
    return [
        PartitionStatus(
            int(part),
            str(position),
            found_lags[position].events,
            found_lags[position].seconds,
            await lock_holder(conn, lock_key(namespace, "projection", projection.name, str(part))),
        )
        for part, position in rows
    ]


# -- rebuild --------------------------------------------------------------------------------------


async def rebuild(
    settings: Settings,
    projection: EventConsumer,
    *,
    switch: bool = True,
    force: bool = False,
    progress: Progress | None = None,
    operator: str = "cli",
) -> RebuildReport:
    _refuse_process(projection, "rebuilt")
    url = settings.require_database_url()
    client = aioredis.from_url(settings.redis_url or "")
    key = lock_key(settings.namespace, "rebuild", projection.name)
    try:
        async with _locked(url, key, f"rebuild {projection.name}") as conn:
            return await _rebuild(url, settings, conn, client, projection, switch, force, progress, operator)
    except OperationRefused:
        raise OperationRefused(f"a rebuild of {projection.name} is already running; wait for it to finish") from None
    finally:
        await client.aclose()


async def _rebuild(
    url: str,
    settings: Settings,
    conn: psycopg.AsyncConnection[Any],
    client: aioredis.Redis,
    projection: EventConsumer,
    switch: bool,
    force: bool,
    progress: Progress | None,
    operator: str,
) -> RebuildReport:
    live, _, _ = await register(conn, projection)
    versions = {
        row[0]
        for row in await (
            await conn.execute("SELECT version FROM projection_checkpoints WHERE projection = %s", (projection.name,))
        ).fetchall()
    }
    new = max(versions | {live, projection.version}) + 1
    started = time.monotonic()
    target = await open_store(conn, client, settings.namespace, projection, new)
    position = await replay(url, target, after=0, progress=progress)
    while await _behind(conn, position) > CATCH_UP_LEFT:
        position = await replay(url, target, after=position, progress=progress)
    report = RebuildReport(projection.name, live, new, 0, 0.0)
    async with _paused(url, settings, projection):
        paused_at = time.monotonic()
        current = await open_store(conn, client, settings.namespace, projection, live)
        head = await head_position(conn)
        for share in await _shares(conn, current):
            await replay(url, share, after=await share.checkpoint(), until=head)
        position = await replay(url, target, after=position, until=head, progress=progress)
        report.differences = (await current.fingerprint()).differences(await target.fingerprint())
        report.switched = switch and (force or not report.differences)
        if report.switched:
            async with conn.transaction():
                await conn.execute(
                    "UPDATE projections SET live_version = %s, state = 'running', error = NULL,"
                    " parked_at = NULL, updated_at = now() WHERE projection = %s",
                    (new, projection.name),
                )
                await target.publish_views()
                await _log(
                    conn,
                    operator,
                    "rebuild.switch",
                    projection.name,
                    from_version=live,
                    to_version=new,
                    position=str(position),
                    differences=report.differences,
                    forced=bool(report.differences),
                )
            await _announce_switch(client, settings.namespace, projection.name, new, position)
        report.paused_seconds = time.monotonic() - paused_at
    report.seconds = time.monotonic() - started
    report.events = await _count(conn, position)
    if report.switched:
        await asyncio.sleep(GRACE_S)
        await current.drop()
    else:
        await target.drop()
        await _log(conn, operator, "rebuild.compare", projection.name, version=new, differences=report.differences)
    return report


async def _announce_switch(client: aioredis.Redis, namespace: str, projection: str, version: int, at: int) -> None:
    """Tells the API processes at once that queries read `version` now: their caches let go of
    the old one (they would also learn it within LIVE_VERSION_CACHE_S, and from the projector
    taking the new version up)."""
    switched = l1.Announcement(projection, version, at, at, l1.ALL, fresh=True)
    try:
        await client.publish(l1.channel(namespace), l1.encode_announcements([switched]))
    except Exception as e:  # only sooner than the other two ways
        log.warning("could not announce the switch of %s to v%d: %s", projection, version, e)


async def _shares(conn: psycopg.AsyncConnection[Any], store: ViewStore) -> list[ViewStore]:
    """The stores that keep a live view's checkpoints: its partitions' when it is kept by
    partitions (infra.delivery.partitions), else itself."""
    if not isinstance(store, SqlStore) or not (count := await store.partition_count()):
        return [store]
    assert isinstance(store.projection, SqlProjection)
    return [SqlStore(conn, store.projection, store.version, part, count) for part in range(count)]


async def _position_before(conn: psycopg.AsyncConnection[Any], position: int) -> int:
    row = await (
        await conn.execute(
            "SELECT coalesce(max(notification_id), 0) FROM events WHERE notification_id < %s", (position,)
        )
    ).fetchone()
    return int(row[0]) if row else 0


async def _behind(conn: psycopg.AsyncConnection[Any], position: int) -> int:
    return (await lags(conn, [position], cap=CATCH_UP_LEFT + 1))[position].events


async def _count(conn: psycopg.AsyncConnection[Any], upto: int) -> int:
    row = await (await conn.execute("SELECT count(*) FROM events WHERE notification_id <= %s", (upto,))).fetchone()
    return int(row[0]) if row else 0


# -- reset, retry, skip ---------------------------------------------------------------------------


async def reset(settings: Settings, projection: EventConsumer, operator: str = "cli") -> None:
    """Empties the live view and its checkpoint: the projector rebuilds it from the start of the log."""
    _refuse_process(projection, "reset")
    url = settings.require_database_url()
    client = aioredis.from_url(settings.redis_url or "")
    try:
        async with _paused(url, settings, projection) as conn, conn.transaction():
            # One transaction: queries see the old view or the new empty one, never none.
            live, _, _ = await register(conn, projection)
            store = await open_store(conn, client, settings.namespace, projection, live)
            await store.drop()
            store = await open_store(conn, client, settings.namespace, projection, live)
            await store.publish_views()
            await _unpark(conn, projection)
            await _log(conn, operator, "reset", projection.name, version=live)
    finally:
        await client.aclose()


async def _unpark(conn: psycopg.AsyncConnection[Any], projection: EventConsumer, resolution: str | None = None) -> None:
    """Marks the projection running again and, with a `resolution`, its open dead letters resolved."""
    await conn.execute(
        "UPDATE projections SET state = 'running', error = NULL, parked_at = NULL,"
        " updated_at = now() WHERE projection = %s",
        (projection.name,),
    )
    if resolution is not None:
        await conn.execute(
            "UPDATE dead_letters SET resolved = %s, resolved_at = now() WHERE projection = %s AND resolved IS NULL",
            (resolution, projection.name),
        )


def _refuse_process(projection: EventConsumer, done: str) -> None:
    if isinstance(projection, ProcessManager):
        raise OperationRefused(
            f"{projection.name} sends commands; replaying history through it would send them"
            f" again, so it cannot be {done}"
        )


async def retry(settings: Settings, projection: EventConsumer, operator: str = "cli") -> int:
    """Resumes a parked projection at the event it parked on; returns that position."""
    async with (
        await psycopg.AsyncConnection.connect(settings.require_database_url(), autocommit=True) as conn,
        conn.transaction(),
    ):
        row = await (
            await conn.execute(
                "SELECT parked_at FROM projections WHERE projection = %s AND state = 'parked' FOR UPDATE",
                (projection.name,),
            )
        ).fetchone()
        if row is None:
            raise OperationRefused(f"{projection.name} is not parked")
        await _unpark(conn, projection, resolution="retried")
        await _log(conn, operator, "retry", projection.name, position=str(row[0]))
        return int(row[0])


async def skip(settings: Settings, projection: EventConsumer, event_id: str, operator: str = "cli") -> int:
    """Moves a parked projection past the event it parked on, explicitly: the view will never hold
    it. Recorded in the operations log; returns the event's position."""
    url = settings.require_database_url()
    client = aioredis.from_url(settings.redis_url or "")
    try:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            letter = await (
                await conn.execute(
                    "SELECT position, type, part FROM dead_letters WHERE projection = %s AND event_id::text = %s"
                    " AND resolved IS NULL ORDER BY id DESC LIMIT 1",
                    (projection.name, event_id),
                )
            ).fetchone()
            if letter is None:
                raise OperationRefused(f"{projection.name} is not parked on event {event_id}")
            position, type_, part = int(letter[0]), str(letter[1]), int(letter[2])
            live, _, _ = await register(conn, projection)
            store = await open_store(conn, client, settings.namespace, projection, live)
            if part >= 0:  # a partition parked: other partitions' events may lie between it and this one
                store = (await _shares(conn, store))[part]
            checkpoint = await store.checkpoint()
            if not (checkpoint < position if part >= 0 else checkpoint == await _position_before(conn, position)):
                raise OperationRefused(f"{projection.name} is at {checkpoint}, not just before event {event_id}")
            async with conn.transaction():
                await store.apply([], checkpoint, position)
                await _unpark(conn, projection, resolution="skipped")
                await _log(
                    conn, operator, "skip", projection.name, event_id=event_id, position=str(position), type=type_
                )
            return position
    finally:
        await client.aclose()

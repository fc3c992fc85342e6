"""Metrics of the delivery runtimes that need the database: how far the relay and each projection
are behind the log's head (events and seconds), and the dead letters each projection holds. Each
runtime process samples them every few seconds on a connection of its own, and only for what it
leads (a standby reports nothing, so summing over processes counts each projection once)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg

from infra.eventstore.recorder import lags
from infra.observe import metrics

log = logging.getLogger(__name__)
SAMPLE_S = 2.0
LAG_CAP = 1_000_000
DEAD_LETTERS = (
    "SELECT projection, part, count(*) FROM dead_letters WHERE resolved IS NULL AND projection = ANY(%s)"
    " GROUP BY projection, part"
)


async def _every(url: str, stop: asyncio.Event, sample: Callable[[psycopg.AsyncConnection[Any]], Any]) -> None:
    while not stop.is_set():
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                while not stop.is_set():
                    await sample(conn)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), SAMPLE_S)
        except (psycopg.Error, OSError) as e:  # the database is away: the runtime says so too
            log.debug("metrics: could not sample lags (%s)", e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SAMPLE_S)


async def watch_relay(url: str, position: Callable[[], int | None], stop: asyncio.Event) -> None:
    """Samples the relay's lag while `position()` (its published position) is known."""

    async def sample(conn: psycopg.AsyncConnection[Any]) -> None:
        at = position()
        if at is None:
            return
        lag = (await lags(conn, [at], LAG_CAP))[at]
        metrics.RELAY_LAG_EVENTS.set(lag.events)
        metrics.RELAY_LAG_SECONDS.set(lag.seconds)

    await _every(url, stop, sample)


Lanes = dict[tuple[str, str], tuple[int, bool]]
"""(projection, partition label) → (checkpoint, parked), for each lane a process leads."""


def partition_label(part: int | None, partitions: int) -> str:
    return "" if part is None else f"{part}/{partitions}"


async def watch_projections(url: str, leading: Callable[[], Lanes], stop: asyncio.Event) -> None:
    """Samples each projection (or partition of one) this process leads: its checkpoint, lag,
    parked flag and open dead letters; forgets those it no longer leads."""
    reported: set[tuple[str, str]] = set()

    async def sample(conn: psycopg.AsyncConnection[Any]) -> None:
        lanes = leading()
        found = await lags(conn, {checkpoint for checkpoint, _ in lanes.values()}, LAG_CAP) if lanes else {}
        names = sorted({name for name, _ in lanes})
        rows = await (await conn.execute(DEAD_LETTERS, (names,))).fetchall() if lanes else []
        dead = {(str(name), int(part)): int(n) for name, part, n in rows}
        for (name, partition), (checkpoint, parked) in lanes.items():
            labels = (name, partition)
            metrics.PROJECTION_CHECKPOINT.labels(*labels).set(checkpoint)
            metrics.PROJECTION_LAG_EVENTS.labels(*labels).set(found[checkpoint].events)
            metrics.PROJECTION_LAG_SECONDS.labels(*labels).set(found[checkpoint].seconds)
            metrics.PROJECTION_PARKED.labels(*labels).set(1 if parked else 0)
            part = int(partition.split("/")[0]) if partition else -1
            metrics.PROJECTION_DEAD_LETTERS.labels(*labels).set(dead.get((name, part), 0))
        for labels in reported - lanes.keys():
            for gauge in (
                metrics.PROJECTION_CHECKPOINT,
                metrics.PROJECTION_LAG_EVENTS,
                metrics.PROJECTION_LAG_SECONDS,
                metrics.PROJECTION_PARKED,
                metrics.PROJECTION_DEAD_LETTERS,
            ):
                with contextlib.suppress(KeyError):
                    gauge.remove(*labels)
        reported.clear()
        reported.update(lanes)

    await _every(url, stop, sample)


def applied(projection: str, partition: str, events: int, started: float, checkpoint: int) -> None:
    """One batch applied to a projection's view (or partition of it) with its checkpoint."""
    metrics.PROJECTION_APPLIED.labels(projection, partition).inc(events)
    metrics.PROJECTION_BATCH_SECONDS.labels(projection, partition).observe(time.perf_counter() - started)
    metrics.PROJECTION_CHECKPOINT.labels(projection, partition).set(checkpoint)

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
    "SELECT projection, count(*) FROM dead_letters WHERE resolved IS NULL AND projection = ANY(%s) GROUP BY projection"
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


async def watch_projections(url: str, leading: Callable[[], dict[str, tuple[int, bool]]], stop: asyncio.Event) -> None:
    """Samples each projection this process leads (`leading()`: name → (checkpoint, parked)): its
    checkpoint, lag, parked flag and open dead letters; forgets those it no longer leads."""
    reported: set[str] = set()

    async def sample(conn: psycopg.AsyncConnection[Any]) -> None:
        lanes = leading()
        found = await lags(conn, {checkpoint for checkpoint, _ in lanes.values()}, LAG_CAP) if lanes else {}
        rows = await (await conn.execute(DEAD_LETTERS, (list(lanes),))).fetchall() if lanes else []
        dead = {str(name): int(n) for name, n in rows}
        for name, (checkpoint, parked) in lanes.items():
            metrics.PROJECTION_CHECKPOINT.labels(name).set(checkpoint)
            metrics.PROJECTION_LAG_EVENTS.labels(name).set(found[checkpoint].events)
            metrics.PROJECTION_LAG_SECONDS.labels(name).set(found[checkpoint].seconds)
            metrics.PROJECTION_PARKED.labels(name).set(1 if parked else 0)
            metrics.PROJECTION_DEAD_LETTERS.labels(name).set(dead.get(name, 0))
        for name in reported - lanes.keys():
            for gauge in (
                metrics.PROJECTION_CHECKPOINT,
                metrics.PROJECTION_LAG_EVENTS,
                metrics.PROJECTION_LAG_SECONDS,
                metrics.PROJECTION_PARKED,
                metrics.PROJECTION_DEAD_LETTERS,
            ):
                with contextlib.suppress(KeyError):
                    gauge.remove(name)
        reported.clear()
        reported.update(lanes)

    await _every(url, stop, sample)


def applied(projection: str, events: int, started: float, checkpoint: int) -> None:
    """One batch applied to a projection's view with its checkpoint."""
    metrics.PROJECTION_APPLIED.labels(projection).inc(events)
    metrics.PROJECTION_BATCH_SECONDS.labels(projection).observe(time.perf_counter() - started)
    metrics.PROJECTION_CHECKPOINT.labels(projection).set(checkpoint)

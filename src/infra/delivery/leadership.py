"""One active process per role (the relay, each projection), by a PostgreSQL advisory lock held on a
dedicated connection. The others wait as standbys; when the leader's process dies its connection
closes, the lock is released, and a standby takes over. The leader writes its progress through the
same connection, so a leader that lost its lock (its connection broke) can write nothing more."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import psycopg

log = logging.getLogger(__name__)


def lock_key(*parts: str) -> int:
    digest = hashlib.blake2b(":".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def try_lock(url: str, key: int, role: str, shared: int | None = None) -> psycopg.AsyncConnection[Any] | None:
    """A connection holding the lock, named for the role and this process; None if another
    process holds it (or PostgreSQL cannot be reached). With `shared`, the connection also holds
    that lock in shared mode (the partitions of one projection share its lock, which an
    unpartitioned lane of it would hold alone)."""
    try:
        conn = await psycopg.AsyncConnection.connect(
            url, autocommit=True, application_name=f"chronicle {role} pid={os.getpid()}"
        )
    except psycopg.OperationalError as e:
        log.warning("cannot reach PostgreSQL to take the lock (%s); retrying", e)
        return None
    if shared is not None:
        row = await (
            await conn.execute("SELECT pg_try_advisory_lock_shared(%s) AND pg_try_advisory_lock(%s)", (shared, key))
        ).fetchone()
    else:
        row = await (await conn.execute("SELECT pg_try_advisory_lock(%s)", (key,))).fetchone()
    if row and row[0]:
        return conn
    await conn.close()
    return None


@asynccontextmanager
async def leadership(
    url: str, key: int, stop: asyncio.Event, role: str, retry: float = 1.0
) -> AsyncIterator[psycopg.AsyncConnection[Any] | None]:
    """Yields the lock's connection once this process leads (None if told to stop first)."""
    announced = False
    conn = None
    while not stop.is_set():
        conn = await try_lock(url, key, role)
        if conn is not None:
            break
        if not announced:
            log.info("%s: another process is active; waiting as a standby", role)
            announced = True
        await pause(stop, retry)
    if conn is None:
        yield None
        return
    log.info("%s: active", role)
    try:
        yield conn
    finally:
        with suppress(psycopg.Error):
            await conn.close()


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleeps, but wakes at once when told to stop."""
    with suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def still_leading(conn: psycopg.AsyncConnection[Any]) -> bool:
    if conn.closed or conn.broken:
        return False
    try:
        await conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True

"""`chronicle bench pipeline --events N`: the write side's and the read side's capacity, each measured
alone so the two cores are not shared between them.

1. **Write side**: N task edits appended through the command layer (load, decide, append with
   guards and hashes) from many threads, at full speed, with no relay or projector running.
2. **Read side**: a projector process hosting every projection starts on that backlog (idle: the
   relay has published nothing yet), then the relay starts, and the clock runs from the moment
   the relay holds its lock until every projection's checkpoint reaches the head. The events take
   the live path: relay, JetStream, the projector's one subscription, each view; not a rebuild.

`ratio` = read / write: at 1.0 or more, the read side keeps up with everything the write side can
append (on separate machines).
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
import uuid
from typing import Any

import psycopg

from commands.base import Actor, Context
from domain.identity import Role
from infra.bench.stack import background, scratch_env
from infra.bootstrap import bootstrap
from infra.eventstore.recorder import head_position
from infra.settings import Settings
from infra.views.operations import checkpoints
from projections import all_projections

WRITERS = 16


def write_side(settings: Settings, events: int, writers: int = WRITERS) -> float:
    """Appends `events` task edits from `writers` threads (each on its own task); returns events/s."""
    app = bootstrap(dataclasses.replace(settings, db_pool_size=writers + 4))
    try:
        user = app.identity.register(
            Context("bench"), f"bench-{uuid.uuid4().hex[:8]}@example.com", "Bench", "bench pw!"
        )
        ctx = Context("bench", actor=Actor(user.id, frozenset({Role.MEMBER})))
        project = app.work.create_project(ctx, "Bench", None).id
        tasks = [app.work.create_task(ctx, project, f"Task {i}").id for i in range(writers)]
        share = [events // writers + (1 if i < events % writers else 0) for i in range(writers)]
        errors: list[BaseException] = []
        start = threading.Barrier(writers + 1)

        def edit(i: int) -> None:
            start.wait()
            try:
                for n in range(share[i]):
                    app.work.edit_task(ctx, tasks[i], {"title": f"Edit {n}"})
            except BaseException as e:  # reported below: a benchmark that hides errors lies
                errors.append(e)

        threads = [threading.Thread(target=edit, args=(i,)) for i in range(writers)]
        for thread in threads:
            thread.start()
        start.wait()
        began = time.perf_counter()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
        if errors:
            raise errors[0]
        return events / elapsed
    finally:
        app.close()


async def _positions(settings: Settings) -> tuple[int, dict[str, int], bool]:
    """The log's head, every projection's checkpoint, and whether the relay holds its lock."""
    async with await psycopg.AsyncConnection.connect(settings.require_database_url(), autocommit=True) as conn:
        relay = await (
            await conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'chronicle relay %%'")
        ).fetchone()
        head = await head_position(conn)
    return head, await checkpoints(settings, list(all_projections())), bool(relay and relay[0])


def read_side(settings: Settings, env: dict[str, str], events: int, timeout: float = 600.0) -> dict[str, Any]:
    """Drains the backlog through relay → JetStream → projector; per projection, events/s until its
    checkpoint reached the head."""
    head, _, _ = asyncio.run(_positions(settings))
    with psycopg.connect(settings.require_database_url()) as conn:
        row = conn.execute("SELECT count(*) FROM events").fetchone()
    backlog = int(row[0]) if row else events  # the edits, and the user, project and tasks they need
    with background(env, "projector"):
        deadline = time.monotonic() + 60
        while len(_held(settings)) < len(all_projections()):  # every lane led, before the relay starts
            if time.monotonic() > deadline:
                raise RuntimeError("the projector did not take its projections' locks")
            time.sleep(0.05)
        with background(env, "relay"):
            while not asyncio.run(_positions(settings))[2]:
                time.sleep(0.01)
            began = time.perf_counter()
            done: dict[str, float] = {}
            while len(done) < len(all_projections()):
                _, checkpoints, _ = asyncio.run(_positions(settings))
                now = time.perf_counter() - began
                done |= {name: now for name, position in checkpoints.items() if position >= head and name not in done}
                if now > timeout:
                    raise RuntimeError(f"the read side did not drain {events} events in {timeout:.0f}s: {checkpoints}")
                time.sleep(0.05)
    slowest = max(done.values())
    return {
        "read_events_per_s": round(backlog / slowest, 1),
        "projections": {name: round(backlog / seconds, 1) for name, seconds in sorted(done.items())},
    }


def _held(settings: Settings) -> set[str]:
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database()"
        ).fetchall()
    return {str(r[0]) for r in rows if str(r[0]).startswith("chronicle projection ")}


def bench_pipeline(settings: Settings, events: int) -> dict[str, Any]:
    with scratch_env(settings) as env:
        own = dataclasses.replace(
            settings, database_url=env["CHRONICLE_DATABASE_URL"], namespace=env["CHRONICLE_NAMESPACE"]
        )
        write = write_side(own, events)
        read = read_side(own, env, events)
    return {
        "bench": "pipeline",
        "events": events,
        "write_events_per_s": round(write, 1),
        "read_events_per_s": read["read_events_per_s"],
        "ratio": round(read["read_events_per_s"] / write, 3),
        "projections": read["projections"],
    }

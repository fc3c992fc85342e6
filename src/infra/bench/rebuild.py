"""`chronicle bench rebuild --events N`: N realistic work events written in bulk into a scratch
database, then every projection rebuilt from the log (each in a process of its own, whose peak RSS
is reported), beside the rate of a plain scan of the event table in the same run. The rate counts
the whole rebuild: replay into the new version, catch-up, the comparison with the live version and
the switch; `paused_s` is how long of that the live view stood still."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import resource
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import redis

from commands.base import make_transcoder
from infra.bench.stack import scratch_env
from infra.eventstore.envelope import LOG_COLUMNS
from infra.eventstore.recorder import TXN_SHIFT, new_event_id
from infra.eventstore.tamper import event_hash
from infra.settings import Settings

EVENTS_PER_TASK = 10
CHUNK = 50_000


def generate(url: str, events: int, seed: int = 1) -> int:
    """Writes about `events` events: users, projects with members, and tasks that are created,
    assigned, edited, started, completed, reopened... Each chunk is one transaction with COPY; the
    positions follow the store's scheme (transaction id << 20 + index)."""
    rng = random.Random(seed)
    transcoder = make_transcoder()
    now = datetime(2026, 11, 1, tzinfo=UTC)
    users = [uuid.uuid4() for _ in range(50)]
    projects = [uuid.uuid4() for _ in range(max(1, events // 20_000))]
    rows: list[tuple[Any, ...]] = []
    written = 0

    def add(stream: uuid.UUID, version: int, topic: str, state: dict[str, Any]) -> None:
        nonlocal now
        now += timedelta(milliseconds=1)
        data = transcoder.encode({**state, "timestamp": now})
        type_ = topic.rpartition(":")[2]
        event_id = new_event_id()
        rows.append(
            (
                event_id,
                stream,
                version,
                topic,
                type_,
                data,
                now,
                event_hash(event_id, stream, version, topic, type_, data, now, None, "bench", None, None),
            )
        )

    with psycopg.connect(url, autocommit=True) as conn:

        def flush() -> None:
            nonlocal written
            with conn.transaction():
                xid = conn.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()[0]  # type: ignore[index]
                with conn.cursor().copy(
                    "COPY events (notification_id, event_id, stream_id, version, topic, type, data,"
                    " recorded_at, command, hash) FROM STDIN"
                ) as copy:
                    for i, (event_id, stream, version, topic, type_, data, at, digest) in enumerate(rows):
                        copy.write_row(
                            ((xid << TXN_SHIFT) + i, event_id, stream, version, topic, type_, data, at, "bench", digest)
                        )
            written += len(rows)
            rows.clear()

        for i, user in enumerate(users):
            add(
                user,
                1,
                "domain.identity:User.Registered",
                {
                    "email": f"user{i}@example.com",
                    "name": f"User {i}",
                    "password_hash": "x",
                    "originator_topic": "domain.identity:User",
                },
            )
        for project in projects:
            add(
                project,
                1,
                "domain.work:Project.Created",
                {"name": "P", "description": "", "owner_id": users[0], "originator_topic": "domain.work:Project"},
            )
            for version, member in enumerate(users[1:10], start=2):
                add(project, version, "domain.work:Project.MemberAdded", {"user_id": member})
        while written + len(rows) < events:
            task, project = uuid.uuid4(), rng.choice(projects)
            add(
                task,
                1,
                "domain.work:Task.Created",
                {
                    "project_id": project,
                    "title": f"Task {written}",
                    "description": "",
                    "priority": "normal",
                    "due_date": None,
                    "created_by": users[0],
                    "originator_topic": "domain.work:Task",
                },
            )
            steps: list[tuple[str, dict[str, Any]]] = [
                ("Task.Assigned", {"assignee_id": rng.choice(users[:10])}),
                ("Task.Edited", {"changes": {"title": f"Edited {written}", "priority": "high"}}),
                ("Task.Started", {}),
                ("Task.Edited", {"changes": {"description": "more"}}),
                ("Task.Completed", {}),
                ("Task.Reopened", {}),
                ("Task.Unassigned", {}),
                ("Task.Assigned", {"assignee_id": rng.choice(users[:10])}),
                ("Task.Completed", {}),
            ]
            for version, (type_, state) in enumerate(steps[: EVENTS_PER_TASK - 1], start=2):
                add(task, version, f"domain.work:{type_}", state)
            if len(rows) >= CHUNK:
                flush()
        if rows:
            flush()
        conn.execute("ANALYZE events")
    return written


def scan(url: str, batch: int = 2000) -> float:
    started = time.perf_counter()
    count = 0
    with psycopg.connect(url) as conn, conn.transaction(), conn.cursor(name="scan") as cursor:
        cursor.itersize = batch
        cursor.execute(f"SELECT {LOG_COLUMNS} FROM events ORDER BY notification_id")
        while rows := cursor.fetchmany(batch):
            count += len(rows)
    return count / (time.perf_counter() - started)


def _rebuild_one(env: dict[str, str], name: str, out: Any) -> None:
    from infra.views.operations import rebuild
    from projections import all_projections

    settings = Settings.from_env(env)
    projection = next(p for p in all_projections() if p.name == name)
    # As in production, the live version is up to date when a rebuild starts (the projector keeps it
    # so): the first, untimed rebuild makes it so; the second is the one measured.
    asyncio.run(rebuild(settings, projection, switch=True, force=True, operator="bench"))
    report = asyncio.run(rebuild(settings, projection, switch=True, force=True, operator="bench"))
    out.put(
        {
            "events": report.events,
            "seconds": round(report.seconds, 2),
            "events_per_s": round(report.rate),
            "paused_s": round(report.paused_seconds, 2),
            "differences": len(report.differences),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
    )


def bench_rebuild(settings: Settings, events: int) -> dict[str, Any]:
    from projections import all_projections

    results: dict[str, Any] = {}
    with scratch_env(settings) as env:
        url = env["CHRONICLE_DATABASE_URL"]
        started = time.perf_counter()
        written = generate(url, events)
        generated_s = time.perf_counter() - started
        scan_rate = scan(url)
        ctx = multiprocessing.get_context("spawn")
        for projection in all_projections():
            out = ctx.Queue()
            proc = ctx.Process(target=_rebuild_one, args=(env, projection.name, out))
            proc.start()
            results[projection.name] = {"kind": projection.kind, **out.get(timeout=3600)}
            proc.join()
        redis.Redis.from_url(settings.redis_url or "").delete(
            *[k for k in redis.Redis.from_url(settings.redis_url or "").scan_iter(f"{env['CHRONICLE_NAMESPACE']}:*")]
            or ["none"]
        )
    sql = [r["events_per_s"] for r in results.values() if r["kind"] == "sql"]
    kv = [r["events_per_s"] for r in results.values() if r["kind"] == "redis"]
    return {
        "bench": "rebuild",
        "events": written,
        "generate_s": round(generated_s, 1),
        "plain_scan_events_per_s": round(scan_rate),
        "sql_views_events_per_s_min": min(sql),
        "redis_views_events_per_s_min": min(kv),
        "peak_rss_mb_max": max(r["peak_rss_mb"] for r in results.values()),
        "projections": results,
    }

"""`chronicle bench appends`: single-event appends from N concurrent writers, three ways, one run.

1. Chronicle's recorder (`ChronicleApplicationRecorder.insert_events`, with metadata).
2. The ceiling: raw psycopg INSERTs of the same row into an equivalent table (same columns,
   same indexes), autocommit, one connection per writer.
3. The eventsourcing library's stock PostgreSQL recorder (table lock + NOTIFY per append).

Everything runs in a scratch database created for the run and dropped after it.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import psycopg
from eventsourcing.persistence import StoredEvent

from infra.eventstore.migrate import migrate
from infra.eventstore.recorder import ChronicleApplicationRecorder, EventStoreDatabase, Meta, new_event_id

STATE = b'{"title":"Write the quarterly report","priority":"normal","timestamp":"2026-11-26T04:27:26+00:00"}'
TOPIC = "domain.work:Task.Edited"


class Writer(Protocol):
    def append(self) -> None: ...

    def close(self) -> None: ...


class _Calls:
    def __init__(self, append: Callable[[], None], close: Callable[[], None] = lambda: None) -> None:
        self.append, self.close = append, close


def run_writers(writers: int, seconds: float, make_writer: Callable[[], Writer]) -> float:
    """Runs `writers` threads, each calling its own append function in a loop; returns appends/s."""
    counts = [0] * writers
    errors: list[BaseException] = []
    start = threading.Barrier(writers + 1)
    stop = threading.Event()

    def loop(i: int) -> None:
        try:
            with contextlib.closing(make_writer()) as writer:
                start.wait()
                while not stop.is_set():
                    writer.append()
                    counts[i] += 1
        except BaseException as e:  # reported below: a benchmark that hides errors lies
            errors.append(e)
            stop.set()
            start.abort()

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(writers)]
    for t in threads:
        t.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        start.wait()
    began = time.perf_counter()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"a writer failed: {errors[0]!r}") from errors[0]
    return sum(counts) / elapsed


def chronicle_writer(database: EventStoreDatabase) -> Callable[[], Writer]:
    recorder = ChronicleApplicationRecorder(database)
    meta = Meta(actor_id="bench", command="bench.append", correlation_id=uuid.uuid4())

    def append() -> None:
        recorder.insert_events([StoredEvent(uuid.uuid4(), 1, TOPIC, STATE)], meta=meta)

    return lambda: _Calls(append)


RAW_TABLE = """
CREATE TABLE raw_events (
    notification_id bigserial PRIMARY KEY, event_id uuid NOT NULL UNIQUE, stream_id uuid NOT NULL,
    version bigint NOT NULL, topic text NOT NULL, type text NOT NULL, data bytea NOT NULL,
    recorded_at timestamptz NOT NULL, actor_id text, command text, correlation_id uuid,
    causation_id uuid, UNIQUE (stream_id, version))
"""


def raw_writer(url: str) -> Callable[[], Writer]:
    correlation = uuid.uuid4()

    def make() -> Writer:
        conn = psycopg.connect(url, autocommit=True)
        cur = conn.cursor(binary=True)  # the same driver practice as the recorder's append path
        sql = (
            "INSERT INTO raw_events (event_id, stream_id, version, topic, type, data, recorded_at,"
            " actor_id, command, correlation_id, causation_id)"
            " VALUES (%s, %s, 1, %s, 'Task.Edited', %s, %s, 'bench', 'bench.append', %s, NULL)"
            " RETURNING notification_id"
        )

        def append() -> None:
            cur.execute(sql, (new_event_id(), uuid.uuid4(), TOPIC, STATE, datetime.now(UTC), correlation)).fetchone()

        return _Calls(append, conn.close)

    return make


def stock_writer(url: str, writers: int) -> tuple[Callable[[], Writer], Any]:
    from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore

    parts = urlsplit(url)
    datastore = PostgresDatastore(
        dbname=parts.path.lstrip("/"),
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password or "",
        pool_size=writers,
        schema="public",
    )
    recorder = PostgresApplicationRecorder(datastore, events_table_name="stock_events")
    recorder.create_table()

    def append() -> None:
        recorder.insert_events([StoredEvent(uuid.uuid4(), 1, TOPIC, STATE)])

    return (lambda: _Calls(append)), datastore


def bench_appends(server_url: str, writers: int, seconds: float, rounds: int | None = None) -> dict[str, Any]:
    """Each contender gets `seconds` in all, in interleaved rounds, so that a checkpoint or a noisy
    neighbour lands on all three alike rather than on whichever ran at that moment."""
    from infra.devstack.scratch import scratch_database

    rounds = rounds or max(1, min(5, int(seconds // 2)))
    slice_s = seconds / rounds
    totals = {"chronicle": 0.0, "raw": 0.0, "stock": 0.0}
    with scratch_database(server_url, "chronicle_bench") as url:
        migrate(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(RAW_TABLE)
        database = EventStoreDatabase(url, pool_size=writers)
        make_stock, datastore = stock_writer(url, writers)
        try:
            database.open()
            contenders = {"chronicle": chronicle_writer(database), "raw": raw_writer(url), "stock": make_stock}
            for _ in range(rounds):
                for name, make in contenders.items():
                    totals[name] += run_writers(writers, slice_s, make) * slice_s
        finally:
            database.close()
            datastore.close()
    chronicle, raw, stock = (totals[k] / seconds for k in ("chronicle", "raw", "stock"))
    return {
        "bench": "appends",
        "writers": writers,
        "seconds": seconds,
        "rounds": rounds,
        "chronicle_per_s": round(chronicle),
        "raw_insert_per_s": round(raw),
        "stock_recorder_per_s": round(stock),
        "ratio_to_raw": round(chronicle / raw, 3),
        "ratio_to_stock": round(chronicle / stock, 2),
    }

"""The ordering guarantee that replaces the stock recorder's table lock.

Writers append concurrently (threads, and separate processes) while a trigger holds each append's
transaction open for a random while after it has taken its transaction id, so transactions commit
out of position order. A reader tails the log the whole time. Properties:

- the reader sees every appended event exactly once, in one order, identical to a final full read;
- the scenario really did commit out of order (otherwise the test proves nothing);
- a reader that tails by position *without* the gate misses events in the same scenario;
- conflicting appends (same stream, same version) store exactly one append, atomically, and every
  loser is told it conflicted.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.devstack.scratch import create_database, drop_database
from infra.eventstore.migrate import migrate
from infra.eventstore.recorder import ChronicleApplicationRecorder, EventStoreDatabase

SLOW_COMMITS = """
CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(random() * current_setting('test.max_hold')::float);
    RETURN NEW;
END $$;
CREATE TRIGGER slow_commit BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION slow_commit();
"""


@pytest.fixture(scope="module")
def slow_db(servers: Any) -> Iterator[str]:
    url = create_database(servers.database_url)
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SLOW_COMMITS)
        conn.execute(f"ALTER DATABASE \"{url.rsplit('/', 1)[1]}\" SET test.max_hold = '0.02'")
    yield url
    drop_database(url)


def _events(n: int) -> list[StoredEvent]:
    stream = uuid.uuid4()
    return [StoredEvent(stream, v, "tests:Something.Happened", b"{}") for v in range(1, n + 1)]


class Tail:
    """A reader polling the log during the writes, as the relay will."""

    def __init__(self, recorder: ChronicleApplicationRecorder, start: int | None) -> None:
        self.recorder, self.last, self.seen = recorder, start, []  # type: ignore[var-annotated]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            self._poll()

    def _poll(self) -> int:
        batch = self.recorder.select_notifications(self.last, 200, inclusive_of_start=self.last is None)
        if self.last is not None:
            batch = [n for n in batch if n.id > self.last]
        self.seen.extend(n.id for n in batch)
        if batch:
            self.last = batch[-1].id
        return len(batch)

    def finish(self) -> list[int]:
        self.stop.set()
        self.thread.join()
        while self._poll():
            pass
        return self.seen


def _full_read(recorder: ChronicleApplicationRecorder, after: int | None) -> list[int]:
    ids: list[int] = []
    while True:
        batch = recorder.select_notifications(after, 1000, inclusive_of_start=after is None)
        batch = [n for n in batch if after is None or n.id > after]
        if not batch:
            return ids
        ids.extend(n.id for n in batch)
        after = batch[-1].id


def _head(recorder: ChronicleApplicationRecorder) -> int | None:
    return recorder.max_notification_id()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    writers=st.integers(2, 12), appends=st.integers(5, 25), sizes=st.lists(st.integers(1, 4), min_size=1, max_size=4)
)
def test_tailing_reader_sees_every_event_once_in_the_final_order_threads(
    slow_db: str, writers: int, appends: int, sizes: list[int]
) -> None:
    database = EventStoreDatabase(slow_db, pool_size=writers + 2)
    recorder = ChronicleApplicationRecorder(database)
    try:
        start = _head(recorder)
        tail = Tail(recorder, start)
        tail.thread.start()
        committed: list[tuple[float, list[int]]] = []
        lock = threading.Lock()

        def write(i: int) -> None:
            for j in range(appends):
                ids = list(recorder.insert_events(_events(sizes[(i + j) % len(sizes)])) or [])
                with lock:
                    committed.append((time.monotonic(), ids))

        threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seen = tail.finish()
        final = _full_read(recorder, start)
        appended = sorted(i for _, ids in committed for i in ids)

        assert len(seen) == len(set(seen)), "the reader saw an event twice"
        assert seen == final, "the tailing reader's order differs from the final full read"
        assert sorted(final) == appended, "an appended event is missing from the log"
        assert final == sorted(final)
        by_commit = [ids[0] for _, ids in sorted(committed)]
        assert by_commit != sorted(by_commit) or writers < 3, "no out-of-order commits: the test proved nothing"
    finally:
        database.close()


def test_tailing_by_position_without_the_gate_misses_events(slow_db: str) -> None:
    """The control: in the same scenario, a reader that trusts positions alone skips events."""
    database = EventStoreDatabase(slow_db, pool_size=16)
    recorder = ChronicleApplicationRecorder(database)
    try:
        start = _head(recorder) or 0
        missed_total = 0
        for _attempt in range(5):
            seen: list[int] = []
            last = start
            stop = threading.Event()

            def naive(seen: list[int] = seen, stop: threading.Event = stop) -> None:
                nonlocal last
                with psycopg.connect(slow_db, autocommit=True) as conn:
                    while not stop.is_set():
                        rows = conn.execute(
                            "SELECT notification_id FROM events WHERE notification_id > %s"
                            " ORDER BY notification_id LIMIT 200",
                            (last,),
                        ).fetchall()
                        seen.extend(r[0] for r in rows)
                        if rows:
                            last = rows[-1][0]

            reader = threading.Thread(target=naive)
            reader.start()
            writers = [
                threading.Thread(target=lambda: [recorder.insert_events(_events(1)) for _ in range(20)])
                for _ in range(12)
            ]
            for t in writers:
                t.start()
            for t in writers:
                t.join()
            stop.set()
            reader.join()
            final = _full_read(recorder, start)
            missed_total += len(set(final) - set(seen))
            start = final[-1]
            if missed_total:
                break
        assert missed_total > 0, "the naive reader missed nothing: the scenario does not commit out of order"
    finally:
        database.close()


def _process_writer(url: str, appends: int, size: int, out: Any) -> None:
    database = EventStoreDatabase(url, pool_size=1)
    recorder = ChronicleApplicationRecorder(database)
    ids: list[int] = []
    for _ in range(appends):
        ids.extend(recorder.insert_events(_events(size)) or [])
    database.close()
    out.put(ids)


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(processes=st.integers(2, 4), appends=st.integers(10, 30), size=st.integers(1, 3))
def test_tailing_reader_sees_every_event_once_in_the_final_order_processes(
    slow_db: str, processes: int, appends: int, size: int
) -> None:
    database = EventStoreDatabase(slow_db, pool_size=2)
    recorder = ChronicleApplicationRecorder(database)
    try:
        start = _head(recorder)
        tail = Tail(recorder, start)
        tail.thread.start()
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        procs = [ctx.Process(target=_process_writer, args=(slow_db, appends, size, out)) for _ in range(processes)]
        for p in procs:
            p.start()
        appended = sorted(i for _ in procs for i in out.get(timeout=120))
        for p in procs:
            p.join(timeout=30)
            assert p.exitcode == 0
        seen = tail.finish()
        final = _full_read(recorder, start)
        assert len(seen) == len(set(seen))
        assert seen == final
        assert sorted(final) == appended
    finally:
        database.close()


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(contenders=st.integers(2, 16), size=st.integers(1, 4), existing=st.integers(0, 3))
def test_conflicting_appends_store_exactly_one_and_report_the_rest(
    database_url: str, contenders: int, size: int, existing: int
) -> None:
    database = EventStoreDatabase(database_url, pool_size=contenders)
    recorder = ChronicleApplicationRecorder(database)
    stream = uuid.uuid4()
    try:
        if existing:
            recorder.insert_events([StoredEvent(stream, v, "tests:X", b"{}") for v in range(1, existing + 1)])
        barrier = threading.Barrier(contenders)
        outcomes: list[str] = []

        def contend(i: int) -> None:
            events = [
                StoredEvent(stream, existing + v, "tests:X", f'{{"by":{i}}}'.encode()) for v in range(1, size + 1)
            ]
            barrier.wait()
            try:
                recorder.insert_events(events)
                outcomes.append(f"won:{i}")
            except IntegrityError:
                outcomes.append("conflict")

        threads = [threading.Thread(target=contend, args=(i,)) for i in range(contenders)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [o for o in outcomes if o.startswith("won")]
        assert len(winners) == 1 and outcomes.count("conflict") == contenders - 1
        stored = recorder.select_events(stream)
        assert [e.originator_version for e in stored] == list(range(1, existing + size + 1))
        winner = winners[0].split(":")[1]
        assert all(e.state == f'{{"by":{winner}}}'.encode() for e in stored[existing:]), "a mixed append"
    finally:
        database.close()

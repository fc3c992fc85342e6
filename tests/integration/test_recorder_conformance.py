"""The eventsourcing library's own recorder conformance tests, run against Chronicle's recorder
on real PostgreSQL.

One premise of the library's suite belongs to its table lock, not to recorders in general:
`ApplicationRecorderTestCase.test_insert_select` expects the notification ids of a fresh table to be
exactly 1, 2, 3. Consecutive numbers in commit order can only come from serializing writers. Our ids
are positions in the gated total order (transaction id << 20 + index): strictly increasing, never
reused, never skipped by a reader, but not consecutive. That one test is re-run here with the same
assertions on the ids the recorder returned; `tests/integration/test_total_order.py` tests the
ordering guarantee that replaces the lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing.tests import persistence as conformance

from infra.eventstore.recorder import (
    ChronicleAggregateRecorder,
    ChronicleApplicationRecorder,
    ChronicleProcessRecorder,
    ChronicleTrackingRecorder,
    EventStoreDatabase,
)


@pytest.fixture(scope="module")
def conformance_db(servers: Any) -> Iterator[EventStoreDatabase]:
    from infra.devstack.scratch import create_database, drop_database
    from infra.eventstore.migrate import migrate

    url = create_database(servers.database_url)
    migrate(url)
    database = EventStoreDatabase(url, pool_size=20)
    yield database
    database.close()
    drop_database(url)


class _Fresh:
    """Each library test starts from empty tables, as the library's own Postgres tests do."""

    db: ClassVar[EventStoreDatabase]

    @pytest.fixture(autouse=True)
    def _database(self, conformance_db: EventStoreDatabase) -> None:
        type(self).db = conformance_db
        with psycopg.connect(conformance_db.url) as conn:
            conn.execute("SET LOCAL chronicle.maintenance = 'on'")  # past the insert-only trigger
            conn.execute("TRUNCATE events, snapshots, tracking")


class TestAggregateRecorder(_Fresh, conformance.AggregateRecorderTestCase):
    def create_recorder(self) -> ChronicleAggregateRecorder:
        return ChronicleAggregateRecorder(self.db, "snapshots")


class TestEventsTableAsAggregateRecorder(_Fresh, conformance.AggregateRecorderTestCase):
    def create_recorder(self) -> ChronicleApplicationRecorder:
        return _AggregateView(self.db)


class _AggregateView(ChronicleApplicationRecorder):
    """The aggregate-recorder contract says insert_events returns None; the events table returns ids."""

    def insert_events(self, stored_events: Any, **kwargs: Any) -> None:
        super().insert_events(stored_events, **kwargs)


class TestApplicationRecorder(_Fresh, conformance.ApplicationRecorderTestCase[ChronicleApplicationRecorder]):
    EXPECT_CONTIGUOUS_NOTIFICATION_IDS = False

    def create_recorder(self) -> ChronicleApplicationRecorder:
        return ChronicleApplicationRecorder(self.db)

    def test_insert_select(self) -> None:
        """The library's test with its literal ids 1, 2, 3 replaced by the ids the recorder returned."""
        recorder = self.create_recorder()
        assert recorder.select_notifications(start=None, limit=3) == []
        assert recorder.select_notifications(start=None, limit=3, topics=["topic1"]) == []
        assert recorder.max_notification_id() is None

        o1, o2 = self.new_originator_id(), self.new_originator_id()
        e1 = StoredEvent(o1, 1, "topic1", b"state1")
        e2 = StoredEvent(o1, 2, "topic2", b"state2")
        e3 = StoredEvent(o2, 1, "topic3", b"state3")
        ids12 = recorder.insert_events([e1, e2])
        (id3,) = recorder.insert_events([e3]) or []
        id1, id2 = ids12 or []
        assert id1 < id2 < id3
        assert id2 == id1 + 1, "the events of one append are adjacent in the order"

        from eventsourcing.persistence import IntegrityError

        with pytest.raises(IntegrityError):
            recorder.insert_events([e3])

        def ids(*args: Any, **kwargs: Any) -> list[int]:
            return [n.id for n in recorder.select_notifications(*args, **kwargs)]

        notes = recorder.select_notifications(start=None, limit=10)
        assert [(n.id, n.originator_id, n.topic, n.state) for n in notes] == [
            (id1, o1, "topic1", b"state1"),
            (id2, o1, "topic2", b"state2"),
            (id3, o2, "topic3", b"state3"),
        ]
        assert ids(start=id1, limit=10) == [id1, id2, id3]
        assert ids(start=None, stop=id2, limit=10) == [id1, id2]
        assert ids(start=id1, limit=10, inclusive_of_start=False) == [id2, id3]
        assert ids(start=id2, limit=10, inclusive_of_start=False) == [id3]
        assert ids(start=None, limit=10, topics=["topic1", "topic2", "topic3"]) == [id1, id2, id3]
        assert ids(id1, 10, topics=["topic1"]) == [id1]
        assert ids(id1, 3, topics=["topic2"]) == [id2]
        assert ids(id1, 3, topics=["topic3"]) == [id3]
        assert ids(id1, 3, topics=["topic1", "topic3"]) == [id1, id3]
        assert recorder.max_notification_id() == id3
        assert ids(None, 1) == [id1]
        assert ids(id2, 1) == [id2]
        assert ids(id1, 1, inclusive_of_start=False) == [id2]
        assert ids(id2, 2) == [id2, id3]
        assert ids(id3, 1) == [id3]
        assert ids(id3, 1, inclusive_of_start=False) == []
        assert ids(start=id2, limit=10, stop=id2) == [id2]
        assert ids(start=id1, limit=10, stop=id2) == [id1, id2]
        assert ids(start=id1, limit=10, stop=id2, inclusive_of_start=False) == [id2]

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()


class TestNonInterleavingNotificationIds(_Fresh, conformance.NonInterleavingNotificationIDsBaseCase):
    def create_recorder(self) -> ChronicleApplicationRecorder:
        return ChronicleApplicationRecorder(self.db)


class TestTrackingRecorder(_Fresh, conformance.TrackingRecorderTestCase):
    def create_recorder(self) -> ChronicleTrackingRecorder:
        return ChronicleTrackingRecorder(self.db)


class TestProcessRecorder(_Fresh, conformance.ProcessRecorderTestCase):
    def create_recorder(self) -> ChronicleProcessRecorder:
        return ChronicleProcessRecorder(self.db)


class _CustomTracking(ChronicleTrackingRecorder):
    pass


class TestFactory(conformance.InfrastructureFactoryTestCase[Any]):
    """`PERSISTENCE_MODULE=infra.eventstore.recorder` makes any eventsourcing Application use Chronicle's store."""

    url: ClassVar[str]

    @pytest.fixture(autouse=True)
    def _url(self, conformance_db: EventStoreDatabase) -> None:
        type(self).url = conformance_db.url

    def setUp(self) -> None:
        from eventsourcing.utils import Environment

        self.env = Environment(
            "TestCase", {"PERSISTENCE_MODULE": "infra.eventstore.recorder", "CHRONICLE_DATABASE_URL": self.url}
        )
        super().setUp()

    def expected_factory_class(self) -> type[Any]:
        from infra.eventstore.recorder import Factory

        return Factory

    def expected_aggregate_recorder_class(self) -> type[Any]:
        return ChronicleApplicationRecorder

    def expected_application_recorder_class(self) -> type[Any]:
        return ChronicleApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[Any]:
        return ChronicleTrackingRecorder

    def tracking_recorder_subclass(self) -> type[Any]:
        return _CustomTracking

    def expected_process_recorder_class(self) -> type[Any]:
        return ChronicleProcessRecorder


# -- Chronicle's own guarantees beyond the library's suite -------------------------------------


def _event(stream: Any, version: int) -> StoredEvent:
    return StoredEvent(stream, version, "domain.work:Task.Edited", b"{}")


def test_a_guarded_append_stores_nothing_once_a_read_stream_has_moved(conformance_db: EventStoreDatabase) -> None:
    from uuid import uuid4

    from infra.eventstore.recorder import DependencyChanged

    recorder = ChronicleApplicationRecorder(conformance_db)
    read, written = uuid4(), uuid4()
    recorder.insert_events([_event(read, 1)])
    assert recorder.insert_events([_event(written, 1)], conditions=[(read, 1)])
    recorder.insert_events([_event(read, 2)])
    for events in ([_event(written, 2)], [_event(written, 2), _event(written, 3)]):
        with pytest.raises(DependencyChanged):
            recorder.insert_events(events, conditions=[(read, 1)])
    assert [e.originator_version for e in recorder.select_events(written)] == [1]


def test_a_position_alone_is_tracked_under_the_same_conditions(conformance_db: EventStoreDatabase) -> None:
    from uuid import uuid4

    from eventsourcing.persistence import IntegrityError, Tracking

    from infra.eventstore.recorder import DependencyChanged

    recorder = ChronicleProcessRecorder(conformance_db)
    name, read = f"p-{uuid4().hex[:8]}", uuid4()
    recorder.insert_events([_event(read, 1), _event(read, 2)])
    with pytest.raises(DependencyChanged):
        recorder.insert_events([], tracking=Tracking(name, 10), conditions=[(read, 1)])
    assert recorder.max_tracking_id(name) is None
    assert recorder.insert_events([], tracking=Tracking(name, 10), conditions=[(read, 2)]) == []
    assert recorder.max_tracking_id(name) == 10
    with pytest.raises(IntegrityError) as again:
        recorder.insert_events([], tracking=Tracking(name, 10), conditions=[(read, 2)])
    assert not isinstance(again.value, DependencyChanged)


def test_events_and_their_position_are_recorded_together_or_not_at_all(conformance_db: EventStoreDatabase) -> None:
    """A process's append is one statement: its events and its position land together; a stream it
    read having moved stores neither; a position already recorded (a redelivery) stores neither."""
    from uuid import uuid4

    from eventsourcing.persistence import IntegrityError, Tracking

    from infra.eventstore.recorder import DependencyChanged

    recorder = ChronicleProcessRecorder(conformance_db)
    name, read, written = f"p-{uuid4().hex[:8]}", uuid4(), uuid4()
    recorder.insert_events([_event(read, 1), _event(read, 2)])
    with pytest.raises(DependencyChanged):
        recorder.insert_events([_event(written, 1)], tracking=Tracking(name, 10), conditions=[(read, 1)])
    assert recorder.max_tracking_id(name) is None and recorder.select_events(written) == []
    ids = recorder.insert_events(
        [_event(written, 1), _event(written, 2)], tracking=Tracking(name, 10), conditions=[(read, 2)]
    )
    assert ids is not None and len(ids) == 2 and recorder.max_tracking_id(name) == 10
    with pytest.raises(IntegrityError) as again:
        recorder.insert_events([_event(written, 3)], tracking=Tracking(name, 10))
    assert not isinstance(again.value, DependencyChanged)
    assert [e.originator_version for e in recorder.select_events(written)] == [1, 2]
    assert recorder.max_tracking_id(name) == 10

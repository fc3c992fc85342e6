"""Aggregates save and load through Chronicle's recorder: state after reload equals state before,
snapshots are used, an old event version is upcast, and every event carries who and why."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date
from typing import Any

import psycopg
import pytest
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from commands.base import Actor, ChronicleApplication, Context
from domain.identity import Role
from domain.work import Priority, Task, TaskStatus
from infra.bootstrap import Chronicle, bootstrap
from infra.settings import Settings


@pytest.fixture
def chronicle(settings: Settings) -> Iterator[Chronicle]:
    app = bootstrap(settings)
    yield app
    app.close()


def state(aggregate: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(aggregate).items() if k != "_pending_events"}


def _user(chronicle: Chronicle) -> Actor:
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    result = chronicle.identity.register(Context("auth.register"), email, "Ada Lovelace", "correct horse battery")
    return Actor(result.id, frozenset({Role.MEMBER}))


def test_state_after_reload_equals_state_before(chronicle: Chronicle) -> None:
    owner, other = _user(chronicle), _user(chronicle)
    ctx = Context("tests", actor=owner)
    project = chronicle.work.create_project(ctx, "Apollo", "to the moon")
    chronicle.work.add_member(ctx, project.id, other.user_id)
    task = chronicle.work.create_task(
        ctx, project.id, "Build the rocket", "big", Priority.HIGH, date(2027, 1, 31), other.user_id
    )
    chronicle.work.edit_task(ctx, task.id, {"title": "Build a bigger rocket", "due_date": None})
    chronicle.work.start_task(ctx, task.id)
    chronicle.work.complete_task(ctx, task.id)

    loaded = chronicle.work.repository.get(task.id)
    assert isinstance(loaded, Task)
    assert loaded.title == "Build a bigger rocket" and loaded.due_date is None
    assert loaded.status is TaskStatus.DONE and loaded.assignee_id == other.user_id
    assert loaded.priority is Priority.HIGH
    fresh = bootstrap(chronicle.settings)
    try:
        assert state(fresh.work.repository.get(task.id)) == state(loaded)
        assert state(fresh.work.repository.get(project.id)) == state(chronicle.work.repository.get(project.id))
    finally:
        fresh.close()


def test_snapshots_are_taken_and_used(chronicle: Chronicle) -> None:
    owner = _user(chronicle)
    ctx = Context("tests", actor=owner)
    project = chronicle.work.create_project(ctx, "Long-lived", None)
    task = chronicle.work.create_task(ctx, project.id, "Edited a lot")
    for i in range(105):
        chronicle.work.edit_task(ctx, task.id, {"title": f"Edit {i}"})
    with psycopg.connect(chronicle.settings.database_url or "") as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM snapshots WHERE stream_id = %s", (task.id,))]
    assert versions == [100]
    assert chronicle.work.snapshots is not None
    snapshot = next(iter(chronicle.work.snapshots.get(task.id, desc=True, limit=1)))
    assert snapshot.originator_version == 100
    loaded = chronicle.work.repository.get(task.id)
    assert loaded.version == 106 and loaded.title == "Edit 104"
    assert chronicle.work.repository.get(task.id, version=50).title == "Edit 48"


class Note(Aggregate):
    """A test aggregate whose creation event gained a field in version 2."""

    class Written(Aggregate.Created):
        text: str
        language: str
        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["language"] = "en"

    @event(Written)
    def __init__(self, text: str, language: str) -> None:
        self.text, self.language = text, language


def test_an_old_event_version_is_upcast_on_load(chronicle: Chronicle) -> None:
    app = ChronicleApplication(chronicle.work._make_factory)
    note_id = uuid.uuid4()
    v1_state = app.mapper.transcoder.encode(
        {
            "text": "written before languages",
            "timestamp": Note.Written.create_timestamp(),
            "originator_topic": get_topic(Note),
        }
    )
    app.recorder.insert_events([StoredEvent(note_id, 1, get_topic(Note.Written), v1_state)])
    note = app.repository.get(note_id)
    assert (note.text, note.language) == ("written before languages", "en")
    note2 = Note(text="bonjour", language="fr")
    app.save(note2)
    assert app.repository.get(note2.id).language == "fr"


def test_every_event_records_who_and_why(chronicle: Chronicle) -> None:
    owner = _user(chronicle)
    correlation, causation = uuid.uuid4(), uuid.uuid4()
    ctx = Context("projects.create", actor=owner, correlation_id=correlation, causation_id=causation)
    result = chronicle.work.create_project(ctx, "Audited", None)
    with psycopg.connect(chronicle.settings.database_url or "") as conn:
        row = conn.execute(
            "SELECT notification_id, event_id, stream_id, version, type, data, recorded_at, actor_id, command,"
            " correlation_id, causation_id FROM events WHERE stream_id = %s",
            (result.id,),
        ).fetchone()
    assert row is not None
    position, event_id, stream_id, version, type_, data, recorded_at, actor, command, corr, cause = row
    assert position == result.position
    assert isinstance(event_id, uuid.UUID) and stream_id == result.id and version == 1
    assert type_ == "Project.Created" and b"Audited" in bytes(data) and recorded_at.tzinfo is not None
    assert (actor, command, corr, cause) == (str(owner.user_id), "projects.create", correlation, causation)

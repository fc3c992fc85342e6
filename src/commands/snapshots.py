"""Snapshots are a cache of a replay, never a source of truth: the write side checks one against a
replay of its stream up to its version (always for a stream whose snapshot was found wrong, and
on a sample of other loads), and so does `chronicle audit verify`, for every snapshot. A snapshot
that disagrees is ignored (the aggregate is replayed from its events) and reported: logged, and
recorded in `ignored_snapshots` by the snapshot recorder."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from eventsourcing.application import AggregateNotFoundError, Application, project_aggregate
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import EventStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IgnoredSnapshot:
    stream_id: uuid.UUID
    version: int
    detail: str


def _disagreement(app: Application[uuid.UUID], snapshot: Any, replayed: Aggregate | None) -> str | None:
    """Why the snapshot is not the state its stream's events give at its version (None: it is)."""
    if replayed is None or replayed.version != snapshot.originator_version:
        return f"its stream has no version {snapshot.originator_version}"
    snapshot_class: Any = getattr(type(replayed), "Snapshot", type(app).snapshot_class)
    fresh = app.mapper.to_domain_event(app.mapper.to_stored_event(snapshot_class.take(replayed)))
    for field in ("topic", "state"):  # not the timestamp: a snapshot carries the time it was taken
        if getattr(fresh, field) != getattr(snapshot, field):
            return f"its {field} differs from a replay of its stream's events"
    return None


def load_checked(
    app: Application[uuid.UUID],
    snapshots: EventStore[uuid.UUID],
    aggregate_id: uuid.UUID,
    on_ignored: Callable[[uuid.UUID], None] = lambda _: None,
) -> Aggregate:
    """The aggregate replayed from its events alone, after checking its latest snapshot against
    the replay at the snapshot's version (reported, and `on_ignored` called, if it disagrees).
    Raises AggregateNotFoundError."""
    latest = next(iter(snapshots.get(aggregate_id, desc=True, limit=1)), None)
    events = iter(app.events.get(aggregate_id))
    if latest is None:
        aggregate = project_aggregate(None, events)
    else:
        upto = latest.originator_version
        aggregate = project_aggregate(None, _upto(events, upto))
        problem = _disagreement(app, latest, aggregate)
        if problem is not None:
            report(app, snapshots, IgnoredSnapshot(aggregate_id, upto, problem), "write side")
            on_ignored(aggregate_id)
        aggregate = project_aggregate(aggregate, events)
    if aggregate is None:
        raise AggregateNotFoundError(aggregate_id)
    return aggregate


def _upto(events: Iterator[Any], upto: int) -> Iterator[Any]:
    """Events up to version `upto`, leaving the rest in `events` (takewhile would eat one more)."""
    while True:
        event = next(events, None)
        if event is None:
            return
        yield event
        if event.originator_version >= upto:
            return


def report(app: Application[uuid.UUID], snapshots: EventStore[uuid.UUID], found: IgnoredSnapshot, by: str) -> None:
    log.error(
        "%s: the snapshot of %s at version %d is ignored: %s", app.name, found.stream_id, found.version, found.detail
    )
    report_ignored = getattr(snapshots.recorder, "report_ignored", None)  # Chronicle's recorder has it
    if report_ignored is not None:
        report_ignored(found.stream_id, found.version, found.detail, by)


def snapshot_at(app: Application[uuid.UUID], aggregate_id: uuid.UUID, version: int) -> Any:
    """A snapshot of the aggregate at `version` built from its events alone (never from a snapshot)."""
    replayed = project_aggregate(None, app.events.get(aggregate_id, lte=version))
    snapshot_class: Any = getattr(type(replayed), "Snapshot", type(app).snapshot_class)
    return snapshot_class.take(replayed)


def check_all(app: Application[uuid.UUID], snapshots: EventStore[uuid.UUID]) -> Iterable[IgnoredSnapshot]:
    """Every stored snapshot checked against a replay of its stream up to its version; yields
    (and reports) those that disagree."""
    recorder: Any = snapshots.recorder
    for stream_id, version in list(recorder.snapshot_keys()):
        snapshot = next(iter(snapshots.get(stream_id, gt=version - 1, lte=version)), None)
        if snapshot is None:
            continue
        replayed = project_aggregate(None, app.events.get(stream_id, lte=version))
        problem = _disagreement(app, snapshot, replayed)
        if problem is not None:
            found = IgnoredSnapshot(stream_id, version, problem)
            report(app, snapshots, found, "verify")
            yield found

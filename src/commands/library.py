"""The one module that reaches into eventsourcing's private interface (names with a leading
underscore). Nothing else of Chronicle's may: it uses what this module exposes.

The library does not promise these names across versions (Chronicle pins it below 9.6). Every
name used here is listed in `PRIVATE_METHODS` and `PRIVATE_ATTRIBUTES`, and
tests/unit/test_library_private_interface.py fails naming each one an installed library no longer
has, or has with other parameters.

- `LeanSaving`, an Application whose `save` handles aggregates only: the library's generic `save`
  checks every object against runtime protocols, which cost a fifth of a command's own CPU in
  `chronicle bench commands`. It runs the library's own steps (`_record`, `_take_snapshots`,
  `_notify`), and lets a snapshot that another process stored first pass.
- `ListeningSubscription`, a ListenNotifySubscription whose wake-ups come from a thread of ours: it
  gives that thread the recorder, whether to go on, a way to wake the puller, and a way to fail the
  subscription with the error (raised to its reader, as the library does with its own).
"""

from __future__ import annotations

import contextlib
import inspect
import uuid
from collections.abc import Sequence
from typing import Any

from eventsourcing.application import Application, ProcessingEvent
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import (
    IntegrityError,
    ListenNotifySubscription,
    Recording,
    TApplicationRecorder_co,
    Tracking,
)

PRIVATE_METHODS: dict[type[Any], dict[str, tuple[str, ...]]] = {
    Application: {
        "_record": ("self", "processing_event"),
        "_take_snapshots": ("self", "processing_event"),
        "_notify": ("self", "recordings"),
    },
}
"""Private methods Chronicle calls or overrides, with the parameter names it relies on."""
PRIVATE_ATTRIBUTES: dict[type[Any], tuple[str, ...]] = {
    ListenNotifySubscription: ("_recorder", "_has_been_stopped", "_thread_error", "_has_been_notified"),
}
"""Private instance attributes Chronicle reads or sets, set by the class's `__init__`."""


def missing_private_methods(expected: dict[type[Any], dict[str, tuple[str, ...]]] = PRIVATE_METHODS) -> list[str]:
    """What of `expected` the installed classes lack, one line per method."""
    problems = []
    for cls, methods in expected.items():
        for name, parameters in methods.items():
            where = f"{cls.__module__}.{cls.__qualname__}.{name}"
            method = getattr(cls, name, None)
            if not callable(method):
                problems.append(f"{where} no longer exists")
                continue
            found = tuple(inspect.signature(method).parameters)
            if found != parameters:
                problems.append(f"{where} takes {found}, not {parameters}")
    return problems


def missing_private_attributes(cls: type[Any], instance: object) -> list[str]:
    """Which of `cls`'s expected private attributes an instance (built by its `__init__`) lacks."""
    where = f"{cls.__module__}.{cls.__qualname__}"
    return [f"{where}().{name} no longer exists" for name in PRIVATE_ATTRIBUTES[cls] if not hasattr(instance, name)]


class LeanSaving(Application[uuid.UUID]):
    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[uuid.UUID]]:
        """The library's save, for aggregates only (see the module docstring)."""
        processing_event: ProcessingEvent[uuid.UUID] = ProcessingEvent(tracking=kwargs.pop("tracking", None))
        for aggregate in objs:
            processing_event.events.extend(aggregate.collect_events())
            processing_event.aggregates[aggregate.id] = aggregate
        processing_event.saved_kwargs.update(kwargs)
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        return recordings

    def save_decisions(
        self,
        decisions: Sequence[tuple[Sequence[DomainEventProtocol[uuid.UUID]], Any, Sequence[tuple[uuid.UUID, int]]]],
        aggregates: Sequence[Any],
        tracking: Tracking,
    ) -> list[int]:
        """Several decisions of a process manager (each: its new events, who and why, the streams it
        read unchanged) and the position that caused them, in one append (the recorder's
        `record_decisions`); then snapshots as `save` takes them."""
        record = getattr(self.recorder, "record_decisions", None)
        if record is None:
            raise TypeError(f"{type(self.recorder).__name__} cannot record several decisions at once")
        stored = [([self.mapper.to_stored_event(e) for e in events], meta, read) for events, meta, read in decisions]
        positions: list[int] = record(stored, tracking)
        processing_event: ProcessingEvent[uuid.UUID] = ProcessingEvent(tracking=tracking)
        processing_event.events.extend(e for events, _, _ in decisions for e in events)
        processing_event.aggregates.update((a.id, a) for a in aggregates)
        self._take_snapshots(processing_event)
        return positions

    def _take_snapshots(self, processing_event: ProcessingEvent[uuid.UUID]) -> None:
        """A snapshot of a version is the same whoever takes it: if another process stored it
        first, the command that triggered it has still succeeded."""
        with contextlib.suppress(IntegrityError):
            super()._take_snapshots(processing_event)


class ListeningSubscription(ListenNotifySubscription[TApplicationRecorder_co]):
    @property
    def recorder(self) -> TApplicationRecorder_co:
        return self._recorder

    @property
    def listening(self) -> bool:
        """Whether the listening thread should go on: not stopped, and not failed."""
        return not self._has_been_stopped and not self._thread_error

    def wake(self) -> None:
        """Makes the puller read the recorder now."""
        self._has_been_notified.set()

    def fail(self, error: BaseException) -> None:
        """Stops the subscription; its reader gets the first error raised."""
        if self._thread_error is None:
            self._thread_error = error
        self.stop()

"""given / when / then for aggregates: build state by commands, then say which events a command
records or which error it raises."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from eventsourcing.application import project_aggregate
from eventsourcing.domain import Aggregate

from domain.errors import DomainError

A = TypeVar("A", bound=Aggregate)


class Spec:
    def __init__(self, aggregate: Aggregate) -> None:
        self.history = list(aggregate.collect_events())
        self.aggregate = aggregate

    def when(self, command: Callable[[Any], Any]) -> Then:
        try:
            command(self.aggregate)
        except DomainError as e:
            return Then(self, [], e)
        return Then(self, list(self.aggregate.collect_events()), None)


class Then:
    def __init__(self, spec: Spec, events: list[Any], error: DomainError | None) -> None:
        self.spec, self.events, self.error = spec, events, error

    def then(self, *names: str, **fields: Any) -> Then:
        assert self.error is None, f"expected {names}, got {type(self.error).__name__}: {self.error}"
        assert [type(e).__qualname__.split(".")[-1] for e in self.events] == list(names)
        for key, value in fields.items():
            assert getattr(self.events[-1], key) == value, key
        replayed = project_aggregate(None, [*self.spec.history, *self.events])
        assert replayed is not None and vars(replayed) == vars(self.spec.aggregate), "replay differs from live state"
        return self

    def then_nothing(self) -> Then:
        return self.then()

    def state(self, **fields: Any) -> Then:
        """The aggregate's attributes after the command (what a reader of its events would rebuild)."""
        assert self.error is None, f"expected state {fields}, got {type(self.error).__name__}: {self.error}"
        for key, value in fields.items():
            assert getattr(self.spec.aggregate, key) == value, f"{key}: {getattr(self.spec.aggregate, key)!r}"
        return self

    def rejected(self, error: type[DomainError], says: str = "", field: str | None = None) -> Then:
        assert self.error is not None, f"expected {error.__name__}, but {self.events} were recorded"
        assert isinstance(self.error, error), f"expected {error.__name__}, got {type(self.error).__name__}"
        assert says in self.error.reason
        if field is not None:
            assert self.error.field == field
        return self


def given(aggregate: Aggregate, *steps: Callable[[Any], Any]) -> Spec:
    for step in steps:
        step(aggregate)
    return Spec(aggregate)


def raises(error: type[DomainError]) -> Any:
    return pytest.raises(error)

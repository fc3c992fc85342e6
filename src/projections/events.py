"""The domain's events as projections see them: names derived from the domain's event classes, and
the data of old stored shapes brought to the current one.

A projection declares what it handles with `handled(Task.Created, ...)`, so renaming an event class
breaks at import (and in mypy), never silently in a view. The names stay plain strings
(`"Task.Created"`, the stored `type` column and the envelope's `type`): the projector runtime routes
by them, and a stored name is a contract with auditors.

Projections read envelopes (plain JSON straight from the stored event, or from NATS), not domain
objects, so the library's upcasting (which runs when an aggregate loads its events) does not reach
them; `upcast` applies the same upcasters of the domain class to the plain data. Envelopes of an old
shape can arrive at any time: a rebuild replays the whole log, and the stream keeps messages the
relay published before an upgrade.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from functools import cache
from typing import Any

import msgspec
from eventsourcing.domain import Aggregate

import domain
from infra.eventstore.envelope import EventEnvelope


def event_name(cls: type[Any]) -> str:
    """The stored name of a domain event class: `Task.Created` (its topic after the colon)."""
    name = cls.__qualname__
    if domain_events().get(name) is not cls:
        raise ValueError(f"{cls.__module__}.{name} is not an event of the domain")
    return name


def handled(*classes: type[Any]) -> frozenset[str]:
    """The names of the event classes a projection handles, for `Projection.handles`."""
    return frozenset(event_name(cls) for cls in classes)


def event_class(event: EventEnvelope) -> type[Any] | None:
    """The domain class of an envelope's event (None for a name the domain does not know), for a
    projection's `match`: `case Task.Created:` compares classes."""
    return domain_events().get(event.type)


def upcast(cls: type[Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """`data` (an envelope's, plain JSON) in the shape of the current version of `cls`, still plain
    JSON: the stored `class_version` (1 when absent) is brought up with the domain's own
    `upcast_vN_vN+1` methods, and `class_version` is dropped."""
    state = dict(data)
    version = int(state.pop("class_version", 1))
    current = int(getattr(cls, "class_version", 1))
    if version >= current:
        return state
    while version < current:
        getattr(cls, f"upcast_v{version}_v{version + 1}")(state)
        version += 1
    plain: dict[str, Any] = msgspec.to_builtins(state)
    return plain


@cache
def domain_events() -> dict[str, type[Any]]:
    """Every event class of every aggregate in `src/domain`, by stored name."""
    found: dict[str, type[Any]] = {}
    for module_info in pkgutil.iter_modules(domain.__path__):
        module = importlib.import_module(f"domain.{module_info.name}")
        for aggregate in vars(module).values():
            if (
                isinstance(aggregate, type)
                and issubclass(aggregate, Aggregate)
                and aggregate.__module__ == module.__name__
            ):
                found |= {cls.__qualname__: cls for cls in _events_of(aggregate)}
    return found


def _events_of(aggregate: type[Aggregate]) -> list[type[Any]]:
    """The event classes nested in an aggregate class, without the bases the library adds to every
    aggregate (`Event`, and `Created` where the aggregate's created event has another name)."""
    nested = [
        cls
        for name, cls in vars(aggregate).items()
        if isinstance(cls, type) and issubclass(cls, Aggregate.Event) and name != "Event"
    ]
    creators = [cls for cls in nested if issubclass(cls, Aggregate.Created)]
    if len(creators) > 1:
        nested = [cls for cls in nested if cls.__name__ != "Created"]
    return nested

"""Chronicle uses a few private names of eventsourcing (commands/library.py). An upgrade of the
library that drops or changes one fails here, naming it, before anything runs on it; and no other
module may override a private method of the library."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any

from eventsourcing.application import Application
from eventsourcing.persistence import ListenNotifySubscription
from eventsourcing.popo import POPOApplicationRecorder

import commands
import infra
from commands import library
from commands.library import (
    PRIVATE_ATTRIBUTES,
    PRIVATE_METHODS,
    ListeningSubscription,
    missing_private_attributes,
    missing_private_methods,
)


def test_the_installed_library_has_every_private_method_chronicle_uses() -> None:
    problems = missing_private_methods()
    assert not problems, "eventsourcing changed its private interface:\n" + "\n".join(problems)


def test_the_installed_library_sets_every_private_attribute_chronicle_uses() -> None:
    subscription = ListeningSubscription(POPOApplicationRecorder())
    with subscription:
        problems = missing_private_attributes(ListenNotifySubscription, subscription)
        assert subscription.listening and subscription.recorder is not None
        subscription.wake()
        subscription.fail(RuntimeError("stop"))
        assert not subscription.listening
    assert not problems, "eventsourcing changed its private interface:\n" + "\n".join(problems)


def test_the_checks_name_what_is_missing_or_changed() -> None:
    class Renamed:
        def _record_events(self, processing_event: Any) -> None: ...

        def _notify(self, recordings: Any, extra: int) -> None: ...

    problems = missing_private_methods({Renamed: PRIVATE_METHODS[Application]})
    assert any("Renamed._record no longer exists" in p for p in problems), problems
    assert any("Renamed._notify takes ('self', 'recordings', 'extra')" in p for p in problems), problems
    assert missing_private_attributes(ListenNotifySubscription, object()) == [
        f"eventsourcing.persistence.ListenNotifySubscription().{name} no longer exists"
        for name in PRIVATE_ATTRIBUTES[ListenNotifySubscription]
    ]


def _classes_of(package: Any) -> list[type[Any]]:
    found = []
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if ".bench" in info.name or ".devstack" in info.name:
            continue  # no library subclasses there; importing them needs optional servers
        module = importlib.import_module(info.name)
        found += [c for _, c in inspect.getmembers(module, inspect.isclass) if c.__module__ == module.__name__]
    return found


def test_only_the_adapter_module_overrides_private_methods_of_the_library() -> None:
    listed = {name for methods in PRIVATE_METHODS.values() for name in methods}
    offenders = []
    for cls in _classes_of(commands) + _classes_of(infra):
        library_bases = [b for b in cls.__mro__[1:] if b.__module__.startswith("eventsourcing.")]
        for name, value in vars(cls).items():
            private = name.startswith("_") and not name.startswith("__") and inspect.isfunction(value)
            overrides = private and any(hasattr(base, name) for base in library_bases)
            if overrides and (cls.__module__ != library.__name__ or name not in listed):
                offenders.append(f"{cls.__module__}.{cls.__qualname__}.{name}")
    assert not offenders, f"private methods of eventsourcing overridden outside commands/library.py: {offenders}"

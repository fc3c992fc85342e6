"""What every context's write side shares: who is acting and why, what a command returns, and an
eventsourcing Application that records both with every event it saves."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, TypeVar

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import (
    InfrastructureFactory,
    IntegrityError,
    JSONTranscoder,
    Recording,
    Transcoding,
)
from eventsourcing.utils import Environment

from domain.errors import Conflict, NotFound
from domain.identity import Role

A = TypeVar("A", bound=Aggregate)


@dataclass(frozen=True)
class Actor:
    """The authenticated caller, as the access token describes them."""

    user_id: uuid.UUID
    roles: frozenset[Role] = frozenset({Role.MEMBER})

    @property
    def is_staff(self) -> bool:
        """Managers and admins may command any project."""
        return bool(self.roles & {Role.MANAGER, Role.ADMIN})


@dataclass(frozen=True)
class IdempotencyKey:
    """A client's Idempotency-Key: recorded in the same statement as the command's events."""

    scope: str
    key: str
    request_hash: bytes
    status: int


@dataclass(frozen=True)
class Claim:
    scope: str
    key: str
    request_hash: bytes
    status: int
    aggregate_id: uuid.UUID
    version: int


@dataclass(frozen=True)
class Context:
    """Who and why: stored with every event a command appends (see infra.eventstore)."""

    command: str
    actor: Actor | None = None
    correlation_id: uuid.UUID = field(default_factory=uuid.uuid4)
    causation_id: uuid.UUID | None = None
    system_actor: str | None = None  # e.g. "cli" or "saga" when no user acts
    idempotency: IdempotencyKey | None = None

    @property
    def actor_id(self) -> str | None:
        return str(self.actor.user_id) if self.actor else self.system_actor


@dataclass(frozen=True)
class CommandResult:
    """What a caller needs to read its own write: the aggregate, its new version, and the position
    of the command's last event in the global order."""

    id: uuid.UUID
    version: int
    position: int | None


class PreconditionFailed(Exception):
    """The caller's expected version (If-Match) is not the aggregate's current version."""

    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(f"expected version {expected}, but the current version is {actual}")
        self.expected = expected
        self.actual = actual


class ConcurrentUpdate(Conflict):
    """Another command appended to the same aggregate first."""


class DateAsISO(Transcoding):
    type = date
    name = "date_iso"

    def encode(self, obj: date) -> str:
        return obj.isoformat()

    def decode(self, data: str) -> date:
        return date.fromisoformat(data)


FactoryMaker = Callable[[Environment], InfrastructureFactory[Any]]


class ChronicleApplication(Application[uuid.UUID]):
    """An eventsourcing Application whose infrastructure the composition root chooses: it hands
    over a function that builds a factory from the application's own environment (so each
    application keeps its own settings, e.g. snapshotting) over the process's shared store."""

    def __init__(self, make_factory: FactoryMaker, env: dict[str, str] | None = None) -> None:
        self._make_factory = make_factory
        super().__init__(env)

    def construct_factory(self, env: Environment) -> InfrastructureFactory[Any]:
        return self._make_factory(env)

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(DateAsISO())

    def load(self, cls: type[A], aggregate_id: uuid.UUID, what: str) -> A:
        try:
            aggregate = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise NotFound(f"{what} {aggregate_id} not found") from None
        if not isinstance(aggregate, cls):
            raise NotFound(f"{what} {aggregate_id} not found")
        return aggregate

    def record(self, ctx: Context, *aggregates: Aggregate, result_of: Aggregate,
               expected_version: int | None = None, expected_of: Aggregate | None = None) -> CommandResult:
        """Appends the aggregates' new events atomically, with the context as who-and-why.

        A command that changed nothing appends nothing and reports the current version.
        """
        recordings: Sequence[Recording[uuid.UUID]] = []
        if any(a.pending_events for a in aggregates):
            key = ctx.idempotency
            claim = key and Claim(key.scope, key.key, key.request_hash, key.status, result_of.id, result_of.version)
            try:
                recordings = self.save(*aggregates, meta=ctx, idempotency=claim)
            except IntegrityError:
                raise ConcurrentUpdate(
                    "another command changed the same data at the same time; reload and retry") from None
        position = recordings[-1].notification.id if recordings else None
        return CommandResult(result_of.id, result_of.version, position)

    def _take_snapshots(self, processing_event: Any) -> None:
        """A snapshot of a version is the same whoever takes it: if another process stored it
        first, the command that triggered it has still succeeded."""
        with contextlib.suppress(IntegrityError):
            super()._take_snapshots(processing_event)


def check_version(aggregate: Aggregate, expected: int | None) -> None:
    if expected is not None and aggregate.version != expected:
        raise PreconditionFailed(expected, aggregate.version)

"""What every context's write side shares: who is acting and why, what a command returns, and an
eventsourcing Application that records both with every event it saves."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import random
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, TypeVar, cast

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    InfrastructureFactory,
    IntegrityError,
    JSONTranscoder,
    Recording,
    Transcoding,
    UUIDAsHex,
)
from eventsourcing.utils import Environment

from commands.library import LeanSaving
from commands.snapshots import load_checked, snapshot_at
from domain.access import Actor as Actor  # the caller's identity; commands' callers import it from here
from domain.errors import Conflict, DomainError, Forbidden, NotFound
from domain.ordering import OrderLine

A = TypeVar("A", bound=Aggregate)


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
    """Who and why: stored with every event a command appends (see infra.eventstore.recorder)."""

    command: str
    actor: Actor | None = None
    correlation_id: uuid.UUID = field(default_factory=uuid.uuid4)
    causation_id: uuid.UUID | None = None
    system_actor: str | None = None  # e.g. "cli" or "saga" when no user acts
    idempotency: IdempotencyKey | None = None
    trace_parent: str | None = None  # the W3C traceparent of the span that decided; stored, not hashed

    @property
    def actor_id(self) -> str | None:
        return str(self.actor.user_id) if self.actor else self.system_actor

    def authenticated(self) -> Actor:
        """The acting user, for commands only a signed-in user may send."""
        if self.actor is None:
            raise Forbidden("this command needs an authenticated user")
        return self.actor


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


class OrderLineAsDict(Transcoding):
    """Stored as `{"_type_": "order_line", "_data_": {sku, quantity, unit_price_minor, currency}}`:
    its data is already plain JSON, which the envelope reader passes on as it is."""

    type = OrderLine
    name = "order_line"

    def encode(self, obj: OrderLine) -> dict[str, Any]:
        return dataclasses.asdict(obj)

    def decode(self, data: dict[str, Any]) -> OrderLine:
        return OrderLine(**data)


def domain_transcodings() -> list[Transcoding]:
    """The value types of Chronicle's events beyond the library's defaults."""
    return [DateAsISO(), OrderLineAsDict()]


def make_transcoder() -> JSONTranscoder:
    """The applications' transcoder, for readers of stored events outside an application."""
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO(), *domain_transcodings()):
        transcoder.register(transcoding)
    return transcoder


FactoryMaker = Callable[[Environment], InfrastructureFactory[Any]]
LoadObserver = Callable[[str, bool], contextlib.AbstractContextManager[Any]]
"""Wraps each load: told what is loaded and whether the cache had it (metrics and a span; the
composition root supplies it)."""


def _unobserved(what: str, cached: bool) -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext()


KeyRecorded = Callable[[IdempotencyKey], bool]


class AggregateCache:
    """The latest known state of recently used aggregates, per process.

    It may be stale (another process appended since), and that is safe: a command appends at the
    cached version + 1, which collides with the newer event, and every aggregate it only read is
    guarded by the append (see `ChronicleApplication.record`). Either way nothing is stored, the
    entries are evicted, and the command is decided again on fresh state. Entries are never
    mutated: a command gets a copy of what it will change.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._entries: OrderedDict[uuid.UUID, Aggregate] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, aggregate_id: uuid.UUID) -> Aggregate | None:
        with self._lock:
            aggregate = self._entries.get(aggregate_id)
            if aggregate is not None:
                self._entries.move_to_end(aggregate_id)
            return aggregate

    def put(self, aggregate: Aggregate) -> None:
        with self._lock:
            current = self._entries.get(aggregate.id)
            if current is not None and current.version > aggregate.version:
                return
            self._entries[aggregate.id] = aggregate
            self._entries.move_to_end(aggregate.id)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)

    def evict(self, *aggregate_ids: uuid.UUID) -> None:
        with self._lock:
            for aggregate_id in aggregate_ids:
                self._entries.pop(aggregate_id, None)


def copy_aggregate(aggregate: Aggregate) -> Aggregate:
    """A copy the caller may change without touching the original: a new object whose attributes
    are the same values, with sets, lists and dicts copied. Chronicle's aggregates hold only
    immutable values and flat containers of them (a deep copy cost a fifth of a command)."""
    clone = object.__new__(type(aggregate))
    clone.__dict__.update(
        {
            key: value.copy() if isinstance(value, set | list | dict) else value
            for key, value in aggregate.__dict__.items()
        }
    )
    return clone


class ChronicleApplication(LeanSaving):
    """An eventsourcing Application whose infrastructure the composition root chooses: it hands
    over a function that builds a factory from the application's own environment (so each
    application keeps its own settings, e.g. snapshotting) over the process's shared store.
    Its `save` is `LeanSaving`'s (commands.library: the private interface of the library)."""

    cache_size = 10_000
    observe_load: LoadObserver = staticmethod(_unobserved)
    snapshot_check_rate = 0.05
    """The share of loads from the store that check the latest snapshot against a replay
    (commands.snapshots); `bootstrap` sets it from CHRONICLE_SNAPSHOT_CHECK_RATE."""

    def __init__(
        self, make_factory: FactoryMaker, env: dict[str, str] | None = None, key_recorded: KeyRecorded | None = None
    ) -> None:
        self._make_factory = make_factory
        self.cache = AggregateCache(self.cache_size)
        self._attempt = threading.local()
        self.distrusted: set[uuid.UUID] = set()
        """Streams whose snapshot was found wrong: loaded and snapshotted from their events alone."""
        self.key_recorded: KeyRecorded = key_recorded or (lambda key: False)
        super().__init__(env)

    def construct_factory(self, env: Environment) -> InfrastructureFactory[Any]:
        return self._make_factory(env)

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        for transcoding in domain_transcodings():
            transcoder.register(transcoding)

    def load(
        self, cls: type[A], aggregate_id: uuid.UUID, what: str, *, for_update: bool = True, fresh: bool = False
    ) -> A:
        """The aggregate, from the cache when it is there (`fresh` skips it). With `for_update` the
        caller gets its own copy to change; without, the shared state, which it must not change."""
        aggregate = None if fresh or getattr(self._attempt, "fresh", False) else self.cache.get(aggregate_id)
        with self.observe_load(what, aggregate is not None):
            if aggregate is not None:
                self._attempt.used_cache = True
            if aggregate is None:
                try:
                    aggregate = self._from_store(aggregate_id)
                except AggregateNotFoundError:
                    raise NotFound(f"{what} {aggregate_id} not found") from None
                self.cache.put(copy_aggregate(aggregate) if for_update else aggregate)
            elif for_update:
                aggregate = copy_aggregate(aggregate)
        if not isinstance(aggregate, cls):
            raise NotFound(f"{what} {aggregate_id} not found")
        return aggregate

    def _from_store(self, aggregate_id: uuid.UUID) -> Aggregate:
        snapshots = self.snapshots
        if snapshots is None or not (aggregate_id in self.distrusted or random.random() < self.snapshot_check_rate):
            aggregate: Aggregate = self.repository.get(aggregate_id)
            return aggregate
        ignored: list[uuid.UUID] = []
        aggregate = load_checked(self, snapshots, aggregate_id, on_ignored=ignored.append)
        if ignored:
            self.distrusted.add(aggregate_id)
        else:
            self.distrusted.discard(aggregate_id)  # its latest snapshot is a good one (again)
        return aggregate

    def take_snapshot(self, aggregate_id: uuid.UUID, version: int | None = None, projector_func: Any = None) -> None:
        """As the library's, but a stream whose snapshot was found wrong is snapshotted from its
        events alone (the library builds on the latest snapshot)."""
        if aggregate_id in self.distrusted and self.snapshots is not None and version is not None:
            self.snapshots.put([snapshot_at(self, aggregate_id, version)])
        elif projector_func is None:
            super().take_snapshot(aggregate_id, version)
        else:
            super().take_snapshot(aggregate_id, version, projector_func)

    def exists(self, cls: type[Aggregate], aggregate_id: uuid.UUID) -> bool:
        """Whether an aggregate of that class is stored under the id (read from the store)."""
        try:
            return isinstance(self.repository.get(aggregate_id), cls)
        except AggregateNotFoundError:
            return False

    def record(
        self, ctx: Context, *aggregates: Aggregate, result_of: Aggregate, depends_on: Sequence[Aggregate] = ()
    ) -> CommandResult:
        """Appends the aggregates' new events atomically, with the context as who-and-why, and only
        if none of `depends_on` (aggregates the decision read) has changed since it was loaded.

        A command that changed nothing appends nothing and reports the current version.
        """
        recordings: Sequence[Recording[uuid.UUID]] = []
        if any(a.pending_events for a in aggregates):
            key = ctx.idempotency
            claim = key and Claim(key.scope, key.key, key.request_hash, key.status, result_of.id, result_of.version)
            try:
                recordings = self.save(
                    *aggregates, meta=ctx, idempotency=claim, conditions=[(d.id, d.version) for d in depends_on]
                )
            except IntegrityError:
                self.cache.evict(*(a.id for a in (*aggregates, *depends_on)))
                raise ConcurrentUpdate(
                    "another command changed the same data at the same time; reload and retry"
                ) from None
            for aggregate in aggregates:
                self.cache.put(aggregate)
        position = recordings[-1].notification.id if recordings else None
        return CommandResult(result_of.id, result_of.version, position)


F = TypeVar("F", bound=Callable[..., CommandResult])


def command(method: F) -> F:
    """Decides a command on cached state, and decides it once more on fresh state whenever the
    cache could have misled it:

    - the append collided (a cached aggregate was stale, or a concurrent command won): a second
      collision, on fresh state, is a real concurrent update (409). If the collision was with an
      identical request that recorded the same Idempotency-Key, the caller replays that response;
    - a rule refused the command, or its If-Match did not match, on state that came from the cache.
    """

    @functools.wraps(method)
    def run(self: ChronicleApplication, ctx: Context, *args: Any, **kwargs: Any) -> CommandResult:
        self._attempt.used_cache = False
        try:
            return method(self, ctx, *args, **kwargs)
        except ConcurrentUpdate:
            if ctx.idempotency is not None and self.key_recorded(ctx.idempotency):
                raise
        except (DomainError, PreconditionFailed):
            if not self._attempt.used_cache:
                raise
        self._attempt.fresh = True
        try:
            return method(self, ctx, *args, **kwargs)
        finally:
            self._attempt.fresh = False

    return cast(F, run)


def check_version(aggregate: Aggregate, expected: int | None) -> None:
    if expected is not None and aggregate.version != expected:
        raise PreconditionFailed(expected, aggregate.version)

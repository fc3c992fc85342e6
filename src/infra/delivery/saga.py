"""`chronicle saga`: the order saga, a process manager. The projector runtime feeds it order events
from JetStream (in order, holes filled from the log, one active process, a poison event parked),
and each event's decisions (commands/order_saga.py) are appended together with the saga's position
in one transaction (a tracking row): a crash at any point appends all or nothing, and a redelivered
event finds its position recorded. Every event it appends carries the correlation id of the
original request and the causing event's id as its causation id.

Beside it, a sweep cancels reserved orders whose payment is overdue.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from typing import Any, ClassVar

import psycopg
from eventsourcing.application import project_aggregate
from eventsourcing.persistence import IntegrityError, OperationalError, StoredEvent, Tracking

from commands.base import ChronicleApplication, Context
from commands.order_saga import HANDLES, OrderSaga, Working
from domain.errors import DomainError
from domain.ordering import Order
from infra.bootstrap import Chronicle, bootstrap
from infra.delivery.leadership import pause
from infra.delivery.projector import Projector
from infra.eventstore.envelope import EventEnvelope
from infra.eventstore.recorder import ChronicleTrackingRecorder, DependencyChanged
from infra.observe import tracing
from infra.observe.metrics import SAGA_DECISION_SECONDS, SAGA_DECISIONS
from infra.settings import Settings
from infra.views.stores import TrackingStore
from projections.base import ProcessManager

log = logging.getLogger(__name__)
ACTOR = "saga:order"
ATTEMPTS = 5
CHUNK = 64  # order events decided and appended in one transaction


class OrderSagaProcess(ProcessManager):
    name = "order_saga"
    version = 1
    handles: ClassVar[frozenset[str]] = HANDLES
    description = "reserves, rejects, releases and commits stock for orders; expires unpaid orders"


class SagaWorker:
    """Acts on one order event at a time, synchronously (the store below runs it in a thread)."""

    def __init__(self, chronicle: Chronicle, saga: OrderSaga, name: str = OrderSagaProcess.name) -> None:
        self.chronicle, self.saga, self.name = chronicle, saga, name

    def steps(self, envelopes: Sequence[EventEnvelope]) -> bool:
        """Decides each event on the state the ones before it left, then appends everything they
        cause, each with its own correlation and causation, and the position of the last, in one
        transaction (one round trip instead of a few per event). False, with nothing appended, if
        anything collided or failed: the caller then takes the events one at a time."""
        app: ChronicleApplication = self.chronicle.inventory
        working: Working = {}
        decided: list[tuple[list[Any], Context, Sequence[tuple[uuid.UUID, int]]]] = []
        read: set[uuid.UUID] = set()
        try:
            working.update(self.orders({e.stream_id for e in envelopes}))
            for envelope in envelopes:
                with decision_span(envelope) as ctx:
                    started = time.perf_counter()
                    decision = self.saga.decide(envelope.type, envelope.stream_id, fresh=False, working=working)
                    events = [event for aggregate in decision.changed for event in aggregate.collect_events()]
                    count_decision(events, started)
                working.update((aggregate.id, aggregate) for aggregate in decision.changed)
                read.update(i for i, _ in decision.read)
                decided.append((events, ctx, decision.read))
            app.save_decisions(decided, list(working.values()), Tracking(self.name, envelopes[-1].position))
        except Exception as e:  # a collision, a stale cache, a poison event: one at a time finds out
            app.cache.evict(*working, *read)
            log.info("saga: a batch of %d events did not go through at once (%s); one at a time", len(envelopes), e)
            return False
        for aggregate in working.values():
            app.cache.put(aggregate)
        return True

    def orders(self, ids: set[uuid.UUID]) -> Working:
        """The orders of a batch as they stand, read in one query (one round trip for the batch
        instead of one per event; orders have no snapshots). A change made after this read still
        cannot slip through: the append is versioned on each order it changes."""
        app: ChronicleApplication = self.chronicle.inventory
        with self.chronicle.database.connection() as conn:
            rows = conn.execute(
                "SELECT stream_id, version, topic, data FROM events WHERE stream_id = ANY(%s)"
                " ORDER BY stream_id, version",
                (list(ids),),
            ).fetchall()
        events: dict[uuid.UUID, list[Any]] = {}
        for stream_id, version, topic, data in rows:
            stored = StoredEvent(stream_id, version, topic, bytes(data))
            events.setdefault(stream_id, []).append(app.mapper.to_domain_event(stored))
        found: dict[uuid.UUID, Any] = {i: project_aggregate(None, stream) for i, stream in events.items()}
        return {i: order for i, order in found.items() if isinstance(order, Order)}

    @staticmethod
    def context(envelope: EventEnvelope) -> Context:
        """Who and why for what an event causes: the saga, for the original request's correlation,
        caused by the event."""
        return Context(
            command=f"saga.{envelope.type}",
            system_actor=ACTOR,
            correlation_id=envelope.correlation_id or uuid.uuid4(),
            causation_id=envelope.event_id,
        )

    def step(self, envelope: EventEnvelope) -> None:
        """Decides and appends what one event causes, with the saga's position, atomically."""
        with decision_span(envelope) as ctx:
            self._step(envelope, ctx)

    def _step(self, envelope: EventEnvelope, ctx: Context) -> None:
        app: ChronicleApplication = self.chronicle.inventory
        tracking = Tracking(self.name, envelope.position)
        for attempt in range(ATTEMPTS):
            started = time.perf_counter()
            decision = self.saga.decide(envelope.type, envelope.stream_id, fresh=attempt > 0)
            count_decision([e for a in decision.changed for e in a.pending_events], started)
            try:
                if decision.changed:
                    app.save(*decision.changed, meta=ctx, tracking=tracking, conditions=decision.read)
                    for aggregate in decision.changed:
                        app.cache.put(aggregate)
                else:
                    self.track(envelope.position, conditions=decision.read)
                return
            except IntegrityError:
                app.cache.evict(*(a.id for a in decision.changed), *(i for i, _ in decision.read))
                if self.recorded() >= envelope.position:
                    return  # done already: a redelivery
                log.info(
                    "saga: %s %s met a change it had not seen; deciding again on fresh state",
                    envelope.type,
                    envelope.stream_id,
                )
        # Not a poison event: the runner starts over in a moment and the event comes again.
        raise OperationalError(f"saga: {envelope.type} {envelope.stream_id} kept colliding after {ATTEMPTS} attempts")

    def recorded(self) -> int:
        return ChronicleTrackingRecorder(self.chronicle.database).max_tracking_id(self.name) or 0

    def track(self, position: int, conditions: Sequence[tuple[uuid.UUID, int]] = ()) -> None:
        """Records the position (if it is not recorded already) when nothing is to be appended; only
        if none of `conditions` (streams and the versions the decision read) has moved on."""
        try:
            self.chronicle.inventory.recorder.insert_events(
                [], tracking=Tracking(self.name, position), conditions=conditions
            )
        except DependencyChanged:
            raise
        except IntegrityError:
            pass  # recorded already: a redelivery


@contextlib.contextmanager
def decision_span(envelope: EventEnvelope) -> Iterator[Context]:
    """A span for deciding on one event, continuing the event's trace, and the context for what
    the decision appends: it carries that span on (infra.observe.tracing)."""
    with tracing.span(f"saga {envelope.type}", parent=envelope.trace_parent, kind=tracing.SpanKind.CONSUMER):
        ctx = SagaWorker.context(envelope)
        yield dataclasses.replace(ctx, trace_parent=tracing.traceparent() or envelope.trace_parent)


def count_decision(events: Sequence[Any], started: float) -> None:
    """A decision's kind is the type of the last event it causes (`Order.Reserved`,
    `Order.Rejected`, ...), or `nothing`."""
    SAGA_DECISIONS.labels(type(events[-1]).__qualname__ if events else "nothing").inc()
    SAGA_DECISION_SECONDS.observe(time.perf_counter() - started)


class SagaStore(TrackingStore):
    """The saga's 'view' is its tracking row: the position of the last event it has acted on."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], worker: SagaWorker) -> None:
        super().__init__(conn, OrderSagaProcess())
        self.worker = worker

    async def apply(self, envelopes: Sequence[EventEnvelope], expected: int, new: int) -> None:
        """Acts on the events after the recorded position, a chunk at a time with the position of
        its last event atomically (so a batch cut short by a crash resumes after its last completed
        chunk); a chunk that does not go through at once is taken one event at a time."""
        done = await self.checkpoint()
        todo = [e for e in envelopes if e.position > done and e.type in HANDLES]
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start : start + CHUNK]
            if not await asyncio.to_thread(self.worker.steps, chunk):
                for envelope in chunk:
                    await asyncio.to_thread(self.worker.step, envelope)
            done = chunk[-1].position  # recorded (or found recorded)
        if done < new:
            await asyncio.to_thread(self.worker.track, new)


async def sweep_overdue(
    chronicle: Chronicle, stop: asyncio.Event, leading: Callable[[], bool], interval: float = 1.0
) -> None:
    """While this process leads the saga, cancels reserved orders whose payment is overdue (found in
    the order view; the order itself decides whether it really is still reserved and overdue). The
    cancellation carries the order's correlation id, caused by the event that set the deadline."""
    url = chronicle.settings.require_database_url()
    while not stop.is_set():
        try:
            if leading():
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                    rows = await (
                        await conn.execute(
                            "SELECT id, correlation_id, deadline_event_id FROM ordering_views.orders"
                            " WHERE status = 'reserved' AND payment_due_at < now() ORDER BY payment_due_at LIMIT 100"
                        )
                    ).fetchall()
                for order_id, correlation_id, deadline_event_id in rows:
                    await _expire(chronicle, order_id, correlation_id, deadline_event_id)
        except psycopg.errors.UndefinedTable:
            pass  # the order view is not built yet
        except (psycopg.Error, OSError) as e:  # the view is away: try again later
            log.warning("saga: could not read overdue orders (%s)", e)
        await pause(stop, interval)


async def _expire(
    chronicle: Chronicle, order_id: uuid.UUID, correlation_id: uuid.UUID | None, deadline_event_id: uuid.UUID | None
) -> None:
    ctx = Context(
        command="saga.expire",
        system_actor=ACTOR,
        correlation_id=correlation_id or uuid.uuid4(),
        causation_id=deadline_event_id,
    )
    try:
        await asyncio.to_thread(chronicle.ordering.expire, ctx, order_id)
    except DomainError:
        pass  # paid or cancelled meanwhile (the view is behind), or not overdue by the order's clock
    except Exception as e:  # the store is away: the next sweep tries again
        log.warning("saga: could not expire order %s (%s: %s)", order_id, type(e).__name__, e)


async def run_saga(settings: Settings, stop: asyncio.Event) -> None:
    chronicle = await asyncio.to_thread(bootstrap, settings)
    saga = OrderSaga(chronicle.inventory, timedelta(seconds=settings.order_payment_timeout_s))
    worker = SagaWorker(chronicle, saga)
    projector = Projector(
        settings, [OrderSagaProcess()], store_factory=lambda conn, *_: SagaStore(conn, worker), group="saga"
    )
    try:
        await asyncio.gather(
            projector.run(stop), sweep_overdue(chronicle, stop, lambda: projector.leads(OrderSagaProcess.name))
        )
    finally:
        await asyncio.to_thread(chronicle.close)

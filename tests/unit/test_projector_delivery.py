"""The projector runtime's delivery guarantees, as a property: whatever JetStream does to the stream
(batches of any size, redeliveries, events lost, any order within a batch), whichever lanes are
busy or lose their server for a moment, every lane applies every event it handles exactly once, in
the log's order, and its checkpoint never claims an event it has not applied. Equal sequences of
applied events make equal views (a projection's `apply` is a function of them), so every view
equals a one-pass replay of the log.

In-memory implementations of the runtime's own ports (`ViewStore`, `EventLog`) stand in for
PostgreSQL and Redis; the runtime itself is the real one."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.delivery.partitions import partition_of
from infra.delivery.projector import Lane, PartitionLog, Projector, mark
from infra.eventstore.envelope import EventEnvelope
from infra.settings import Settings
from infra.views.base import Fingerprint, StaleCheckpoint
from projections import all_projections
from projections.base import EventConsumer

TYPES = ["Task.Created", "Task.Edited", "Task.Completed", "Project.Created", "User.Registered", "Order.Placed"]


class RecordingStore:
    """A view that records which events it was given: atomic per batch, fenced by the expected
    checkpoint, and able to fail once like a server that went away."""

    def __init__(self, consumer: EventConsumer) -> None:
        self.projection, self.version = consumer, 1
        self.position = 0
        self.touched: set[str] | None = None
        self.applied: list[int] = []
        self.fail_next = False

    async def prepare(self) -> None:
        return None

    async def publish_views(self) -> None:
        return None

    async def checkpoint(self) -> int:
        return self.position

    async def apply(self, envelopes: Sequence[EventEnvelope], expected: int, new: int) -> None:
        if self.fail_next:
            self.fail_next = False
            raise ConnectionResetError("the view's server went away")
        if expected != self.position:
            raise StaleCheckpoint(f"at {self.position}, not {expected}")
        positions = [e.position for e in envelopes]
        assert positions == sorted(set(positions)) and all(expected < p <= new for p in positions)
        self.applied += [e.position for e in envelopes if e.type in self.projection.handles]
        self.position = new

    async def fingerprint(self) -> Fingerprint:
        return Fingerprint()

    async def drop(self) -> None:
        return None


class MemoryLog:
    def __init__(self, events: list[EventEnvelope]) -> None:
        self.events, self.relayed = events, 0

    async def between(self, after: int, until: int, limit: int) -> list[EventEnvelope]:
        return [e for e in self.events if after < e.position < until][:limit]

    async def published(self) -> int:
        return self.relayed


def envelopes(types: list[str], gaps: list[int], streams: list[uuid.UUID] | None = None) -> list[EventEnvelope]:
    found, previous = [], 0
    for i, (kind, gap) in enumerate(zip(types, gaps, strict=False)):
        position = previous + gap
        stream = streams[i] if streams else uuid.uuid4()
        found.append(
            EventEnvelope(
                event_id=uuid.uuid4(), position=position, previous=previous, stream_id=stream, version=1,
                type=kind, context="work", data={}, recorded_at=datetime.now(UTC),
            )
        )  # fmt: skip
        previous = position
    return found


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[EventEnvelope], list[tuple[list[int], set[int], int | None, bool]]]:
    """A log, and what the subscription delivers of it: per batch the indices of its events (a
    slice of the log, some lost, some earlier ones again, shuffled), the lanes busy meanwhile, a
    lane whose server fails during it, and whether the subscription then goes quiet."""
    n = draw(st.integers(1, 40))
    log = envelopes(draw(st.lists(st.sampled_from(TYPES), min_size=n, max_size=n)),
                    draw(st.lists(st.integers(1, 4), min_size=n, max_size=n)))  # fmt: skip
    lanes = len(all_projections())
    batches, start = [], 0
    while start < n:
        size = draw(st.integers(1, 8))
        indices = [i for i in range(start, min(n, start + size)) if not draw(st.booleans()) or draw(st.booleans())]
        if start and draw(st.booleans()):
            indices += draw(st.lists(st.integers(0, start - 1), max_size=3))  # redelivered
        indices = draw(st.permutations(indices))
        busy = draw(st.sets(st.integers(0, lanes - 1), max_size=3))
        failing = draw(st.none() | st.integers(0, lanes - 1))
        batches.append((indices, busy, failing, draw(st.booleans())))
        start += size
    return log, batches


def _check(lane: Lane, store: RecordingStore, log: list[EventEnvelope]) -> None:
    handled = [e.position for e in log if e.type in lane.consumer.handles and e.position <= store.position]
    assert store.applied == handled, f"{lane.consumer.name}: applied {store.applied}, log has {handled}"
    if lane.leading:
        assert lane.checkpoint == store.position


async def _run(log: list[EventEnvelope], batches: list[tuple[list[int], set[int], int | None, bool]]) -> None:
    projector = Projector(Settings(database_url="postgresql://unused", namespace="t"), all_projections())
    source = MemoryLog(log)
    stores = [RecordingStore(lane.consumer) for lane in projector.lanes]
    for lane, store in zip(projector.lanes, stores, strict=True):
        lane.lead(store, source, 1, 0)
    for indices, busy, failing, quiet in batches:
        if failing is not None:
            stores[failing].fail_next = True
        for i in busy:
            await projector.lanes[i].lock.acquire()
        await projector.deliver([log[i] for i in indices])
        for i in busy:
            projector.lanes[i].lock.release()
        await projector.settle()  # what came while they were busy
        if failing is not None:
            stores[failing].fail_next = False  # the server is back (a busy lane never met the failure)
        source.relayed = max([source.relayed, *(log[i].position for i in indices)])
        for lane, store in zip(projector.lanes, stores, strict=True):
            if not lane.leading:  # lost its server: taken up again from its stored checkpoint
                lane.lead(store, source, 1, await store.checkpoint())
            if quiet:
                await projector.catch_up(lane)
            _check(lane, store, log)
    source.relayed = log[-1].position
    for lane, store in zip(projector.lanes, stores, strict=True):
        await projector.catch_up(lane)
        assert store.position == log[-1].position
        _check(lane, store, log)


@settings(max_examples=100, deadline=None)
@given(deliveries())
def test_any_delivery_leaves_every_view_equal_to_a_one_pass_replay(
    case: tuple[list[EventEnvelope], list[tuple[list[int], set[int], int | None, bool]]],
) -> None:
    asyncio.run(_run(*case))


# -- with partitions ------------------------------------------------------------------------------

PARTITIONS = 3
Feed = list[EventEnvelope]  # what JetStream holds for one consumer, in stream order


def partition_feeds(log: list[EventEnvelope], relay_batches: list[int]) -> dict[int | None, Feed]:
    """What the relay publishes: the whole log, and per partition its events (each naming the
    partition's previous event) followed, after each relay batch, by a mark."""
    feeds: dict[int | None, Feed] = {None: list(log), **{k: [] for k in range(PARTITIONS)}}
    heads = [0] * PARTITIONS
    ends = {log[min(i, len(log) - 1)].position for i in relay_batches} | {log[-1].position}
    for event in log:
        k = partition_of(event.stream_id, PARTITIONS)
        feeds[k].append(msgspec.structs.replace(event, previous=heads[k]))
        heads[k] = event.position
        if event.position in ends:
            for part in range(PARTITIONS):
                if heads[part] != event.position:
                    feeds[part].append(mark(event.position, heads[part]))
    return feeds


@st.composite
def partitioned_deliveries(
    draw: st.DrawFn,
) -> tuple[list[EventEnvelope], dict[int | None, Feed], list[tuple[int | None, list[int], bool]]]:
    """A log of a few aggregates, the feeds the relay makes of it, and what the subscriptions
    deliver of them, interleaved: per batch its feed, the indices of its messages (a slice, some
    lost, some earlier ones again, shuffled) and whether that feed then goes quiet."""
    n = draw(st.integers(1, 40))
    streams = [uuid.UUID(int=i + 1) for i in range(draw(st.integers(1, 6)))]
    log = envelopes(
        draw(st.lists(st.sampled_from(TYPES), min_size=n, max_size=n)),
        draw(st.lists(st.integers(1, 4), min_size=n, max_size=n)),
        draw(st.lists(st.sampled_from(streams), min_size=n, max_size=n)),
    )
    feeds = partition_feeds(log, draw(st.lists(st.integers(0, n - 1), max_size=8)))
    plans = {}
    for part, feed in feeds.items():
        plan, start = [], 0
        while start < len(feed):
            size = draw(st.integers(1, 8))
            indices = [
                i for i in range(start, min(len(feed), start + size)) if not draw(st.booleans()) or draw(st.booleans())
            ]
            if start and draw(st.booleans()):
                indices += draw(st.lists(st.integers(0, start - 1), max_size=3))
            plan.append((part, draw(st.permutations(indices)), draw(st.booleans())))
            start += size
        plans[part] = plan
    order = draw(st.permutations([part for part, plan in plans.items() for _ in plan]))
    taken = {part: iter(plan) for part, plan in plans.items()}
    return log, feeds, [next(taken[part]) for part in order]


async def _run_partitioned(
    log: list[EventEnvelope], feeds: dict[int | None, Feed], batches: list[tuple[int | None, list[int], bool]]
) -> None:
    settings = Settings(database_url="postgresql://unused", namespace="t", partitions=PARTITIONS)
    projector = Projector(settings, all_projections())
    assert sum(lane.part is not None for lane in projector.lanes) == PARTITIONS  # task_list is partitioned
    source = MemoryLog(log)
    stores = [RecordingStore(lane.consumer) for lane in projector.lanes]

    def lead(lane: Lane, store: RecordingStore, checkpoint: int) -> None:
        lane_log = source if lane.part is None else PartitionLog(source, lane.part, PARTITIONS)
        lane.lead(store, lane_log, 1, checkpoint)

    for lane, store in zip(projector.lanes, stores, strict=True):
        lead(lane, store, 0)
    for part, indices, quiet in batches:
        await projector.deliver([feeds[part][i] for i in indices], part)
        await projector.settle()
        source.relayed = max([source.relayed, *(feeds[part][i].position for i in indices)])
        for lane, store in zip(projector.lanes, stores, strict=True):
            if quiet and lane.part == part:
                await projector.catch_up(lane)
            _check_part(lane, store, log)
    source.relayed = log[-1].position
    for lane, store in zip(projector.lanes, stores, strict=True):
        await projector.catch_up(lane)
        assert store.position == log[-1].position
        _check_part(lane, store, log)


def _check_part(lane: Lane, store: RecordingStore, log: list[EventEnvelope]) -> None:
    mine = [e for e in log if lane.part is None or partition_of(e.stream_id, PARTITIONS) == lane.part]
    handled = [e.position for e in mine if e.type in lane.consumer.handles and e.position <= store.position]
    applied = [p for p in store.applied if p in {e.position for e in mine}]
    assert applied == store.applied, f"{lane.role} was given another partition's events"
    assert store.applied == handled, f"{lane.role}: applied {store.applied}, log has {handled}"
    assert lane.checkpoint == store.position


@settings(max_examples=100, deadline=None)
@given(partitioned_deliveries())
def test_with_partitions_any_delivery_leaves_every_view_equal_to_a_one_pass_replay(
    case: tuple[list[EventEnvelope], dict[int | None, Feed], list[tuple[int | None, list[int], bool]]],
) -> None:
    asyncio.run(_run_partitioned(*case))

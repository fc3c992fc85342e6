"""The saga decides on cached stock, so every decision it appends checks that the stock it read
is still current: a rejection or a release decided on stale stock is decided again."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest

from commands.base import Actor, Context
from commands.order_saga import HANDLES, OrderSaga
from domain.identity import Role
from domain.inventory import Stock, stock_id
from domain.ordering import OrderStatus
from infra.bootstrap import Chronicle, bootstrap
from infra.delivery.projector import READ_BETWEEN
from infra.delivery.saga import SagaWorker
from infra.devstack.embedded import ServerUrls
from infra.eventstore.envelope import EnvelopeReader, EventEnvelope
from infra.settings import Settings
from tests.waiting import eventually

MANAGER = Context("tests.stock", actor=Actor(uuid.uuid4(), frozenset({Role.MANAGER})))


@pytest.fixture
def apps(servers: ServerUrls, fresh_database_url: str) -> Iterator[tuple[Chronicle, Chronicle, Chronicle]]:
    """Three processes' worth of write side: the API's and two saga workers' (each its own cache),
    on a database of the test's own (no `chronicle saga` runs there: the test drives the workers)."""
    settings = Settings(database_url=fresh_database_url, nats_url=servers.nats_url, redis_url=servers.redis_url)
    made = [bootstrap(settings) for _ in range(3)]
    yield made[0], made[1], made[2]
    for app in made:
        app.close()


def _worker(app: Chronicle, name: str) -> SagaWorker:
    return SagaWorker(app, OrderSaga(app.inventory, timedelta(minutes=15)), name=name)


def _order_events(app: Chronicle, order_id: uuid.UUID, count: int = 1) -> list[EventEnvelope]:
    """The order's events the saga handles, as a reader of the log sees them: below the gate, which
    a transaction still open elsewhere on the server holds back for a moment."""

    def readable() -> list[EventEnvelope]:
        with app.database.connection() as conn:
            rows = conn.execute(
                READ_BETWEEN.replace("ORDER BY", "AND stream_id = %s ORDER BY"), (0, 2**62, order_id, 100)
            ).fetchall()
        found = [e for e in EnvelopeReader().from_rows(rows, 0) if e.type in HANDLES]
        assert len(found) >= count, [e.type for e in found]
        return found

    return eventually(readable, what=f"{count} event(s) of order {order_id} below the gate", timeout=10)


def _place(api: Chronicle, sku: str, quantity: int) -> uuid.UUID:
    ctx = Context("orders.place", actor=Actor(uuid.uuid4()))
    return api.ordering.place_order(ctx, [{"sku": sku, "quantity": quantity}]).id


def test_a_rejection_decided_on_stale_stock_is_decided_again(apps: tuple[Chronicle, Chronicle, Chronicle]) -> None:
    api, saga_app, _ = apps
    worker = _worker(saga_app, f"decide-{uuid.uuid4().hex[:6]}")
    sku = f"STALE-{uuid.uuid4().hex[:6].upper()}"
    api.catalog.create_product(MANAGER, sku, "Stale", None, 100, "EUR")
    api.inventory.receive(MANAGER, sku, 1)
    first = _place(api, sku, 1)
    worker.step(_order_events(api, first)[0])  # the worker caches the stock, now at 0 available
    api.inventory.receive(MANAGER, sku, 5)  # behind the worker's back
    second = _place(api, sku, 3)
    worker.step(_order_events(api, second)[0])
    assert api.ordering.order(second, fresh=True).status is OrderStatus.RESERVED
    stock = api.inventory.load(Stock, stock_id(sku), "stock", fresh=True)
    assert (stock.available, stock.reserved) == (2, 4)


def test_a_release_decided_on_stale_stock_is_decided_again(apps: tuple[Chronicle, Chronicle, Chronicle]) -> None:
    api, old_leader_app, new_leader_app = apps
    name = f"release-{uuid.uuid4().hex[:6]}"
    old, new = _worker(old_leader_app, name), _worker(new_leader_app, name)
    sku = f"FAILOVER-{uuid.uuid4().hex[:6].upper()}"
    api.catalog.create_product(MANAGER, sku, "Failover", None, 100, "EUR")
    api.inventory.receive(MANAGER, sku, 4)
    warm = _place(api, sku, 1)
    new.step(_order_events(api, warm)[0])  # the new leader caches the stock early
    order = _place(api, sku, 2)
    old.step(_order_events(api, order)[0])  # the old leader reserves; the new leader's cache is stale
    api.ordering.cancel(Context("orders.cancel", actor=Actor(api.ordering.order(order).customer_id)), order)
    cancelled = _order_events(api, order, count=2)[-1]
    assert cancelled.type == "Order.Cancelled"
    new.step(cancelled)
    stock = api.inventory.load(Stock, stock_id(sku), "stock", fresh=True)
    assert (stock.available, stock.reserved) == (3, 1) and not stock.is_reserved_for(order)


def test_an_order_for_a_sku_never_stocked_is_rejected_and_opens_no_stock(
    apps: tuple[Chronicle, Chronicle, Chronicle],
) -> None:
    api, saga_app, _ = apps
    worker = _worker(saga_app, f"unstocked-{uuid.uuid4().hex[:6]}")
    sku = f"NONE-{uuid.uuid4().hex[:6].upper()}"
    api.catalog.create_product(MANAGER, sku, "Never stocked", None, 100, "EUR")
    order = _place(api, sku, 1)
    worker.step(_order_events(api, order)[0])
    assert api.ordering.order(order, fresh=True).status is OrderStatus.REJECTED
    worker.step(_order_events(api, order, count=2)[-1])  # Order.Rejected: nothing to release
    with api.database.connection() as conn:
        opened = conn.execute("SELECT count(*) FROM events WHERE stream_id = %s", (stock_id(sku),)).fetchone()
    assert opened == (0,)


def test_a_batch_decides_each_event_on_what_the_ones_before_it_left_and_lands_at_once(
    apps: tuple[Chronicle, Chronicle, Chronicle],
) -> None:
    """Four orders of 2 against 5 units, decided in one batch: the first two reserve, the other two
    are rejected (each decision saw the reservations before it), everything lands in one
    transaction with the position of the last order, and each event names its own cause."""
    api, saga_app, _ = apps
    name = f"batch-{uuid.uuid4().hex[:6]}"
    worker = _worker(saga_app, name)
    sku = f"BATCH-{uuid.uuid4().hex[:6].upper()}"
    api.catalog.create_product(MANAGER, sku, "Batch", None, 100, "EUR")
    api.inventory.receive(MANAGER, sku, 5)
    orders = [_place(api, sku, 2) for _ in range(4)]
    placed = [_order_events(api, order)[0] for order in orders]
    assert worker.steps(placed)
    statuses = [api.ordering.order(order, fresh=True).status for order in orders]
    assert statuses == [OrderStatus.RESERVED] * 2 + [OrderStatus.REJECTED] * 2
    stock = api.inventory.load(Stock, stock_id(sku), "stock", fresh=True)
    assert (stock.available, stock.reserved) == (1, 4)
    assert worker.recorded() == placed[-1].position
    with api.database.connection() as conn:
        caused = conn.execute(
            "SELECT stream_id, causation_id, notification_id >> 20 FROM events WHERE actor_id = 'saga:order'"
            " AND (stream_id = ANY(%s) OR stream_id = %s)",
            (orders, stock_id(sku)),
        ).fetchall()
    assert len({txn for _, _, txn in caused}) == 1, "not one transaction"
    by_order = {e.stream_id: e.event_id for e in placed}
    assert {cause for stream, cause, _ in caused if stream in by_order} == set(by_order.values())
    assert all(by_order[stream] == cause for stream, cause, _ in caused if stream in by_order)
    assert not worker.steps(placed), "a redelivered batch must append nothing"
    assert api.inventory.load(Stock, stock_id(sku), "stock", fresh=True).reserved == 4

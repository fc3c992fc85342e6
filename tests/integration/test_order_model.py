"""A Hypothesis state machine over the real write side (PostgreSQL) and the real saga decisions:
random interleavings of receive, adjust, place, the saga's steps, cancel, pay, ship, expire and
redelivery of an event already acted on, checked against a model after every step.

The saga is driven synchronously here (each `saga` rule acts on the next order event of the log,
as `chronicle saga` does from JetStream), so Hypothesis chooses exactly when it runs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from commands.base import Actor, Context
from commands.order_saga import HANDLES, OrderSaga
from domain.errors import Conflict, Invalid
from domain.identity import Role
from domain.inventory import Stock, stock_id
from domain.ordering import OrderStatus
from infra.bootstrap import Chronicle, bootstrap
from infra.delivery.projector import READ_BETWEEN
from infra.delivery.saga import SagaWorker
from infra.devstack.embedded import ServerUrls
from infra.devstack.scratch import create_database, drop_database
from infra.eventstore.envelope import EnvelopeReader, EventEnvelope
from infra.eventstore.migrate import migrate
from infra.settings import Settings
from tests.waiting import eventually

MANAGER = Context("tests.stock", actor=Actor(uuid.uuid4(), frozenset({Role.MANAGER})))
TIMEOUT = timedelta(minutes=15)


@dataclass
class ModelStock:
    available: int = 0
    reserved: int = 0
    committed: int = 0
    received: int = 0
    adjusted: int = 0


@dataclass
class ModelOrder:
    customer: uuid.UUID
    lines: dict[str, int]
    status: OrderStatus = OrderStatus.PLACED
    holds: bool = False  # holds a reservation


@dataclass
class Model:
    stock: dict[str, ModelStock] = field(default_factory=dict)
    orders: dict[uuid.UUID, ModelOrder] = field(default_factory=dict)
    pending: list[tuple[str, uuid.UUID]] = field(default_factory=list)  # order events the saga has yet to see

    def saga(self, event: str, order_id: uuid.UUID) -> None:
        order = self.orders[order_id]
        if event == "Order.Placed" and order.status is OrderStatus.PLACED:
            if all(self.stock[s].available >= q for s, q in order.lines.items()):
                for s, q in order.lines.items():
                    self.stock[s].available -= q
                    self.stock[s].reserved += q
                order.status, order.holds = OrderStatus.RESERVED, True
            else:
                order.status = OrderStatus.REJECTED
                self.pending.append(("Order.Rejected", order_id))
        elif event in ("Order.Cancelled", "Order.Rejected") and order.holds:
            for s, q in order.lines.items():
                self.stock[s].available += q
                self.stock[s].reserved -= q
            order.holds = False
        elif event == "Order.Shipped" and order.holds:
            for s, q in order.lines.items():
                self.stock[s].reserved -= q
                self.stock[s].committed += q
            order.holds = False


@pytest.fixture(scope="module")
def chronicle(servers: ServerUrls) -> Iterator[Chronicle]:
    url = create_database(servers.database_url)
    migrate(url)
    app = bootstrap(Settings(database_url=url, nats_url=servers.nats_url, redis_url=servers.redis_url))
    yield app
    app.close()
    drop_database(url)


class OrderMachine(RuleBasedStateMachine):
    chronicle: Chronicle

    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.now = datetime.now(UTC)
        self.chronicle.ordering.clock = lambda: self.now
        self.saga = SagaWorker(
            self.chronicle,
            OrderSaga(self.chronicle.inventory, TIMEOUT, clock=lambda: self.now),
            name=f"model-{uuid.uuid4().hex[:8]}",
        )
        self.reader = EnvelopeReader()
        self.position = self._head()
        self.acted: list[EventEnvelope] = []
        self.customers = [uuid.uuid4() for _ in range(3)]
        self.skus: list[str] = []

    def _head(self) -> int:
        with self.chronicle.database.connection() as conn:
            row = conn.execute("SELECT coalesce(max(notification_id), 0) FROM events").fetchone()
        return int(row[0]) if row else 0

    @initialize(count=st.integers(1, 3))
    def products(self, count: int) -> None:
        for i in range(count):
            sku = f"M{uuid.uuid4().hex[:8].upper()}-{i}"
            self.chronicle.catalog.create_product(MANAGER, sku, f"Model {sku}", None, 100 + i, "EUR")
            self.skus.append(sku)
            self.model.stock[sku] = ModelStock()

    @rule(data=st.data(), quantity=st.integers(1, 6))
    def receive(self, data: st.DataObject, quantity: int) -> None:
        sku = data.draw(st.sampled_from(self.skus))
        self.chronicle.inventory.receive(MANAGER, sku, quantity)
        self.model.stock[sku].available += quantity
        self.model.stock[sku].received += quantity

    @rule(data=st.data(), delta=st.integers(-5, 5).filter(bool))
    def adjust(self, data: st.DataObject, delta: int) -> None:
        sku = data.draw(st.sampled_from(self.skus))
        model = self.model.stock[sku]
        try:
            self.chronicle.inventory.adjust(MANAGER, sku, delta, "counted")
        except Conflict:
            assert model.available + delta < 0
            return
        assert model.available + delta >= 0
        model.available += delta
        model.adjusted += delta

    @rule(data=st.data())
    def place(self, data: st.DataObject) -> None:
        skus = data.draw(st.lists(st.sampled_from(self.skus), min_size=1, max_size=len(self.skus), unique=True))
        lines = {sku: data.draw(st.integers(1, 4)) for sku in skus}
        customer = data.draw(st.sampled_from(self.customers))
        order_id = self.chronicle.ordering.place_order(
            Context("orders.place", actor=Actor(customer)), [{"sku": s, "quantity": q} for s, q in lines.items()]
        ).id
        self.model.orders[order_id] = ModelOrder(customer, lines)
        self.model.pending.append(("Order.Placed", order_id))

    @precondition(lambda self: bool(self.model.pending))
    @rule()
    def saga_acts(self) -> None:
        event = self._next_event()
        expected = self.model.pending.pop(0)
        assert (event.type, event.stream_id) == expected
        self.saga.step(event)
        self.acted.append(event)
        self.model.saga(*expected)

    def _next_event(self) -> EventEnvelope:
        """The next order event of the log after the last one acted on, as a reader sees the log:
        below the gate, which a transaction still open elsewhere on the server holds back a moment."""

        def next_order_event() -> EventEnvelope | None:
            with self.chronicle.database.connection() as conn:
                rows = conn.execute(READ_BETWEEN, (self.position, 2**62, 1000)).fetchall()
            for envelope in self.reader.from_rows(rows, self.position):
                self.position = envelope.position
                if envelope.type in HANDLES:
                    return envelope
            return None

        return eventually(next_order_event, what="the order event the model expects, in the log", timeout=10)

    @precondition(lambda self: bool(self.acted))
    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        """An event the saga already acted on comes again (JetStream redelivery): nothing changes."""
        before = self._snapshot()
        self.saga.step(data.draw(st.sampled_from(self.acted)))
        assert self._snapshot() == before

    def _order_rule(
        self, data: st.DataObject, action: str, allowed: set[OrderStatus], then: OrderStatus, event: str | None
    ) -> None:
        if not self.model.orders:
            return
        order_id = data.draw(st.sampled_from(sorted(self.model.orders)))
        order = self.model.orders[order_id]
        ctx = Context(f"orders.{action}", actor=Actor(order.customer) if action in ("pay", "cancel") else MANAGER.actor)
        app = self.chronicle.ordering
        call: dict[str, Any] = {
            "pay": lambda: app.pay(ctx, order_id, "psp"),
            "cancel": lambda: app.cancel(ctx, order_id),
            "ship": lambda: app.ship(ctx, order_id),
            "expire": lambda: app.expire(ctx, order_id),
        }
        try:
            call[action]()
        except (Conflict, Invalid):
            assert order.status not in allowed, (action, order.status)
            return
        assert order.status in allowed, (action, order.status)
        order.status = then
        if event:
            self.model.pending.append((event, order_id))

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        self._order_rule(
            data,
            "cancel",
            {OrderStatus.PLACED, OrderStatus.RESERVED, OrderStatus.PAID},
            OrderStatus.CANCELLED,
            "Order.Cancelled",
        )

    @rule(data=st.data())
    def pay(self, data: st.DataObject) -> None:
        self._order_rule(data, "pay", {OrderStatus.RESERVED}, OrderStatus.PAID, None)

    @rule(data=st.data())
    def ship(self, data: st.DataObject) -> None:
        self._order_rule(data, "ship", {OrderStatus.PAID}, OrderStatus.SHIPPED, "Order.Shipped")

    @rule(data=st.data())
    def expire(self, data: st.DataObject) -> None:
        self.now += TIMEOUT + timedelta(seconds=1)  # every reserved order is overdue now
        self._order_rule(data, "expire", {OrderStatus.RESERVED}, OrderStatus.CANCELLED, "Order.Cancelled")

    def _snapshot(self) -> tuple[Any, ...]:
        stocks = tuple((s.available, s.reserved, s.committed, s.version) for s in map(self._stock, self.skus))
        orders = tuple(self.chronicle.ordering.order(o, fresh=True).version for o in sorted(self.model.orders))
        return stocks, orders

    def _stock(self, sku: str) -> Stock:
        try:
            return self.chronicle.inventory.load(Stock, stock_id(sku), "stock", fresh=True)
        except Exception:
            return Stock.open(sku)

    @invariant()
    def stock_matches_the_model_and_never_goes_negative(self) -> None:
        for sku in self.skus:
            real, model = self._stock(sku), self.model.stock[sku]
            assert real.available >= 0 and real.reserved >= 0
            assert real.available + real.reserved + real.committed == real.received + real.adjusted
            assert (real.available, real.reserved, real.committed, real.received, real.adjusted) == (
                model.available,
                model.reserved,
                model.committed,
                model.received,
                model.adjusted,
            ), sku
            holders = {
                str(o): q for o, m in self.model.orders.items() if m.holds for s, q in m.lines.items() if s == sku
            }
            assert real.reservations == holders

    @invariant()
    def orders_match_the_model(self) -> None:
        for order_id, model in self.model.orders.items():
            assert self.chronicle.ordering.order(order_id, fresh=True).status is model.status

    def teardown(self) -> None:
        if not self.skus:
            return
        while self.model.pending:  # the saga catches up: nothing stays reserved for a dead order
            self.saga_acts()
        self.stock_matches_the_model_and_never_goes_negative()
        for model in self.model.orders.values():
            assert model.holds == (model.status in (OrderStatus.RESERVED, OrderStatus.PAID))


def test_orders_and_stock_follow_the_model_under_any_interleaving(chronicle: Chronicle) -> None:
    OrderMachine.chronicle = chronicle
    run_state_machine_as_test(
        OrderMachine,
        settings=settings(
            max_examples=30,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )

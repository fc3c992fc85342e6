"""The order saga under SIGKILL: killed at random moments during a burst of orders, restarted,
it still decides every order exactly once, and stock balances exactly. Unpaid orders expire and
give their stock back. Real relay, projector and saga processes on a database of the test's own."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from commands.base import Actor, Context
from domain.identity import Role
from domain.inventory import Stock, stock_id
from domain.ordering import Order, OrderStatus
from infra.bootstrap import Chronicle, bootstrap
from infra.devstack.embedded import ServerUrls
from infra.eventstore.envelope import EnvelopeReader
from infra.settings import Settings
from tests.integration.pipeline import Processes, running
from tests.waiting import eventually

PAYMENT_TIMEOUT_S = 4
MANAGER = Context("tests.stock", actor=Actor(uuid.uuid4(), frozenset({Role.MANAGER})))


@pytest.fixture
def stack(servers: ServerUrls, fresh_database_url: str) -> Iterator[tuple[Chronicle, Processes]]:
    settings = Settings(
        database_url=fresh_database_url,
        nats_url=servers.nats_url,
        redis_url=servers.redis_url,
        namespace=f"s{uuid.uuid4().hex[:8]}",
    )
    chronicle = bootstrap(settings)
    with running(
        settings, "relay", "projector", "saga", CHRONICLE_ORDER_PAYMENT_TIMEOUT_S=str(PAYMENT_TIMEOUT_S)
    ) as processes:
        yield chronicle, processes
    chronicle.close()


def _products(chronicle: Chronicle, stock: dict[str, int]) -> list[str]:
    for sku, quantity in stock.items():
        chronicle.catalog.create_product(MANAGER, sku, f"Product {sku}", None, 100, "EUR")
        chronicle.inventory.receive(MANAGER, sku, quantity)
    return list(stock)


def _order(chronicle: Chronicle, customer: uuid.UUID, lines: list[tuple[str, int]]) -> uuid.UUID:
    ctx = Context("orders.place", actor=Actor(customer))
    return chronicle.ordering.place_order(ctx, [{"sku": s, "quantity": q} for s, q in lines]).id


def _orders(chronicle: Chronicle, ids: list[uuid.UUID]) -> list[Order]:
    return [chronicle.ordering.order(i, fresh=True) for i in ids]


def _check_stock(chronicle: Chronicle, skus: list[str], received: dict[str, int], orders: list[Order]) -> bool:
    """Every unit is available, reserved for a live (reserved) order, or nowhere else; no order holds
    a reservation it should not, and the log holds at most one reservation per order and SKU.
    True, or an AssertionError that says what is off."""
    live = {o.id: o for o in orders if o.status is OrderStatus.RESERVED}
    for sku in skus:
        stock = chronicle.inventory.load(Stock, stock_id(sku), "stock", fresh=True)
        assert stock.available >= 0 and stock.reserved >= 0
        assert stock.available + stock.reserved + stock.committed == stock.received + stock.adjusted == received[sku]
        expected = {
            str(o.id): q for o in live.values() for s, q in ((ln.sku, ln.quantity) for ln in o.lines) if s == sku
        }
        assert stock.reservations == expected, sku
        assert stock.reserved == sum(expected.values())
    with chronicle.database.connection() as conn:
        rows = conn.execute("SELECT stream_id, data FROM events WHERE type = 'Stock.Reserved'").fetchall()
    reader = EnvelopeReader()
    reservations = Counter((stream, str(reader.data(bytes(data))["order_id"])) for stream, data in rows)
    assert not [k for k, n in reservations.items() if n > 1], "an order was reserved twice"
    return True


def test_a_saga_killed_at_random_decides_every_order_once_and_stock_balances(
    stack: tuple[Chronicle, Processes],
) -> None:
    chronicle, processes = stack
    rng = random.Random(20261126)
    received = {f"CRASH-{uuid.uuid4().hex[:6].upper()}-{i}": 25 for i in range(3)}
    skus = _products(chronicle, received)
    customers = [uuid.uuid4() for _ in range(8)]
    placing = threading.Event()
    kills = 0

    def killer() -> None:
        nonlocal kills
        while placing.is_set():
            time.sleep(rng.uniform(0.2, 0.9))
            processes.kill("saga")
            kills += 1
            time.sleep(rng.uniform(0.0, 0.3))
            processes.start("saga")

    def burst(customer: uuid.UUID) -> list[uuid.UUID]:
        mine = random.Random(customer.int)
        placed = []
        for _ in range(20):
            lines = mine.sample(skus, mine.randint(1, 2))
            placed.append(_order(chronicle, customer, [(s, mine.randint(1, 3)) for s in lines]))
            time.sleep(mine.uniform(0, 0.03))
        return placed

    placing.set()
    chaos = threading.Thread(target=killer, daemon=True)
    chaos.start()
    with ThreadPoolExecutor(max_workers=4) as pool:
        ids = [o for placed in pool.map(burst, customers) for o in placed]
    time.sleep(1.0)  # the killer keeps going a little while the saga works through the backlog
    placing.clear()
    chaos.join()
    assert kills >= 3

    decided = {OrderStatus.RESERVED, OrderStatus.REJECTED, OrderStatus.CANCELLED}
    eventually(
        lambda: all(o.status in decided for o in _orders(chronicle, ids)), what="every order decided", timeout=90
    )
    orders = _orders(chronicle, ids)
    assert {o.status for o in orders} <= decided
    assert any(o.status is OrderStatus.REJECTED for o in orders), "the burst should outrun the stock"
    # Orders may expire (and their stock come back a moment later) while this reads: read again then.
    eventually(
        lambda: _check_stock(chronicle, skus, received, _orders(chronicle, ids)),
        what="stock that balances with the orders",
    )

    # Nobody pays: every reserved order expires and its stock comes back (the saga releases it
    # after the cancellation, so wait for both before checking).
    eventually(
        lambda: all(o.status is not OrderStatus.RESERVED for o in _orders(chronicle, ids)),
        what="every reserved order to expire",
        timeout=PAYMENT_TIMEOUT_S + 60,
    )
    eventually(
        lambda: all(chronicle.inventory.load(Stock, stock_id(s), "stock", fresh=True).reserved == 0 for s in skus),
        what="the expired orders' stock to come back",
    )
    orders = _orders(chronicle, ids)
    _check_stock(chronicle, skus, received, orders)
    assert all(chronicle.inventory.load(Stock, stock_id(s), "stock", fresh=True).available == 25 for s in skus)
    expired = [o for o in orders if o.status is OrderStatus.CANCELLED]
    assert expired and all(o.reason == "payment not received in time" for o in expired)


def test_an_unpaid_order_expires_with_its_requests_correlation_id(stack: tuple[Chronicle, Processes]) -> None:
    chronicle, _ = stack
    [sku] = _products(chronicle, {f"EXP-{uuid.uuid4().hex[:6].upper()}": 3})
    ctx = Context("orders.place", actor=Actor(uuid.uuid4()))
    order_id = chronicle.ordering.place_order(ctx, [{"sku": sku, "quantity": 2}]).id
    eventually(
        lambda: chronicle.ordering.order(order_id, fresh=True).status is OrderStatus.CANCELLED,
        what="the unpaid order to expire",
        timeout=PAYMENT_TIMEOUT_S + 30,
    )
    eventually(
        lambda: chronicle.inventory.load(Stock, stock_id(sku), "stock", fresh=True).available == 3,
        what="the expired order's stock to be released",
    )
    with chronicle.database.connection() as conn:
        rows = conn.execute(
            "SELECT type, actor_id FROM events WHERE correlation_id = %s ORDER BY notification_id",
            (ctx.correlation_id,),
        ).fetchall()
    assert [t for t, _ in rows] == [
        "Order.Placed",
        "Stock.Reserved",
        "Order.Reserved",
        "Order.Cancelled",
        "Stock.Released",
    ]
    assert {a for t, a in rows if t != "Order.Placed"} == {"saga:order"}

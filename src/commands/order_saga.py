"""The order saga's decisions: given an order event, what changes in stock and in the order.

Everything one event causes is decided on fresh state and appended at once, with the saga's
position (see infra/delivery/saga.py): a crash appends nothing or everything, and a redelivered event finds
its position recorded and causes nothing. The decisions themselves are also idempotent:
reservations, releases and commits are keyed by order.

An order is reserved whole or not at all: if any line is short, nothing is reserved and the order
is rejected with the reason, so there is never anything to release for a rejected order.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from eventsourcing.domain import Aggregate

from commands.base import ChronicleApplication
from domain.errors import NotFound
from domain.inventory import InsufficientStock, Stock, stock_id
from domain.ordering import Order, OrderStatus

Working = dict[uuid.UUID, Aggregate]
"""Aggregates changed by earlier decisions of one batch, by id, not yet appended."""
HANDLES = frozenset(cls.__qualname__ for cls in (Order.Placed, Order.Rejected, Order.Cancelled, Order.Shipped))
"""The stored names of the order events the saga acts on (`Order.Placed`, ...)."""


@dataclass
class Decision:
    """What one order event causes: aggregates with new events to append, and the aggregates the
    decision read without changing (ids and versions), which must not have changed when it is
    appended (a rejection or a release decided on stale stock must not stand)."""

    changed: list[Aggregate] = field(default_factory=list)
    read: list[tuple[uuid.UUID, int]] = field(default_factory=list)


class OrderSaga:
    def __init__(
        self,
        app: ChronicleApplication,
        payment_timeout: timedelta,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.app, self.payment_timeout, self.clock = app, payment_timeout, clock

    def decide(
        self, event_type: str, order_id: uuid.UUID, *, fresh: bool = True, working: Working | None = None
    ) -> Decision:
        """Decides on the order as it is now and on the stock as cached (unless `fresh`): the
        append then checks that every stock read is still at the version decided on. `working`
        holds what earlier decisions of the same batch changed and have not appended yet: they
        are decided on as those decisions left them."""
        working = working if working is not None else {}
        found = working.get(order_id)
        order = found if isinstance(found, Order) else self.app.load(Order, order_id, "order", fresh=True)
        if event_type == Order.Placed.__qualname__:
            return self._reserve(order, fresh, working)
        if event_type in (Order.Rejected.__qualname__, Order.Cancelled.__qualname__):
            return self._each_stock(order, fresh, working, lambda stock: stock.release(order.id))
        if event_type == Order.Shipped.__qualname__:
            return self._each_stock(order, fresh, working, lambda stock: stock.commit(order.id))
        return Decision()  # not one of HANDLES: the saga runtime never sends it

    def _reserve(self, order: Order, fresh: bool, working: Working) -> Decision:
        if order.status is not OrderStatus.PLACED:
            return Decision()  # decided already (redelivery), or cancelled before the saga got to it
        stocks = [self._stock(line.sku, fresh, working) for line in order.lines]
        read = [(stock.id, version) for stock, version in stocks]
        try:
            for (stock, _), line in zip(stocks, order.lines, strict=True):
                stock.reserve(order.id, line.quantity)
        except InsufficientStock as short:
            order.reject(short.reason)
            return Decision([order], read)
        order.mark_reserved(self.clock() + self.payment_timeout)
        return Decision([*(stock for stock, _ in stocks), order])

    def _each_stock(self, order: Order, fresh: bool, working: Working, change: Callable[[Stock], Any]) -> Decision:
        decision = Decision()
        for line in order.lines:
            stock, version = self._stock(line.sku, fresh, working)
            if version == 0:  # no stock at all, so none held for this order: open nothing
                decision.read.append((stock.id, 0))
                continue
            change(stock)
            if stock.pending_events:
                decision.changed.append(stock)
            else:
                decision.read.append((stock.id, version))
        return decision

    def _stock(self, sku: str, fresh: bool, working: Working) -> tuple[Stock, int]:
        """The stock, and the version it was read at (0: it has no events yet)."""
        if isinstance(stock := working.get(stock_id(sku)), Stock):
            return stock, stock.version
        try:
            stock = self.app.load(Stock, stock_id(sku), "stock", fresh=fresh)
            return stock, stock.version
        except NotFound:
            return Stock.open(sku), 0

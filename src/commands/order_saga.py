"""The order saga's decisions: given an order event, what changes in stock and in the order.

Everything one event causes is decided on fresh state and appended at once, with the saga's
position (see infra/saga.py): a crash appends nothing or everything, and a redelivered event finds
its position recorded and causes nothing. The decisions themselves are also idempotent:
reservations, releases and commits are keyed by order.

An order is reserved whole or not at all: if any line is short, nothing is reserved and the order
is rejected with the reason, so there is never anything to release for a rejected order.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from eventsourcing.domain import Aggregate

from commands.base import ChronicleApplication
from domain.errors import NotFound
from domain.inventory import InsufficientStock, Stock, stock_id
from domain.ordering import Order, OrderStatus

HANDLES = frozenset({"Order.Placed", "Order.Rejected", "Order.Cancelled", "Order.Shipped"})


class OrderSaga:
    def __init__(self, app: ChronicleApplication, payment_timeout: timedelta,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.app, self.payment_timeout, self.clock = app, payment_timeout, clock

    def decide(self, event_type: str, order_id: uuid.UUID) -> list[Aggregate]:
        """The aggregates the event changes (with their new events pending)."""
        order = self.app.load(Order, order_id, "order", fresh=True)
        match event_type:
            case "Order.Placed":
                return self._reserve(order)
            case "Order.Rejected" | "Order.Cancelled":
                return self._each_stock(order, lambda stock: stock.release(order.id))
            case "Order.Shipped":
                return self._each_stock(order, lambda stock: stock.commit(order.id))
        return []

    def _reserve(self, order: Order) -> list[Aggregate]:
        if order.status is not OrderStatus.PLACED:
            return []  # decided already (redelivery), or cancelled before the saga got to it
        stocks = [self._stock(line["sku"]) for line in order.lines]
        try:
            for stock, line in zip(stocks, order.lines, strict=True):
                stock.reserve(order.id, int(line["quantity"]))
        except InsufficientStock as short:
            order.reject(short.reason)
            return [order]
        order.mark_reserved(self.clock() + self.payment_timeout)
        return [*stocks, order]

    def _each_stock(self, order: Order, change: Callable[[Stock], Any]) -> list[Aggregate]:
        stocks = [self._stock(line["sku"]) for line in order.lines]
        for stock in stocks:
            change(stock)
        return [s for s in stocks if s.pending_events]

    def _stock(self, sku: str) -> Stock:
        try:
            return self.app.load(Stock, stock_id(sku), "stock", fresh=True)
        except NotFound:
            return Stock.open(sku)

"""Inventory: the stock of one SKU. Available stock never goes negative: every change is decided
on the stock's current version and appended at the next one, so two concurrent decisions cannot
both spend the same units.

Reservations are keyed by order: reserving, releasing or committing an order's units a second
time changes nothing, so a process manager may repeat any of them safely.
"""

from __future__ import annotations

import uuid
from typing import Any

from eventsourcing.domain import Aggregate, event

from domain.catalog import clean_sku
from domain.errors import Conflict, Invalid
from domain.text import check_text

STOCK_NAMESPACE = uuid.UUID("7b2c3d4e-5f60-4a71-8b82-93c4d5e6f708")


def stock_id(sku: str) -> uuid.UUID:
    return uuid.uuid5(STOCK_NAMESPACE, clean_sku(sku))


class InsufficientStock(Conflict):
    def __init__(self, sku: str, requested: int, available: int) -> None:
        super().__init__(f"only {available} of {sku} available, {requested} requested", field="quantity")
        self.sku, self.requested, self.available = sku, requested, available


class Stock(Aggregate):
    @staticmethod
    def create_id(sku: str, **_: Any) -> uuid.UUID:
        return stock_id(sku)

    class Opened(Aggregate.Created):
        sku: str

    @event(Opened)
    def __init__(self, sku: str) -> None:
        self.sku = sku
        self.available = 0
        self.reserved = 0
        self.committed = 0
        self.received = 0
        self.adjusted = 0
        self.reservations: dict[str, int] = {}

    @classmethod
    def open(cls, sku: str) -> Stock:
        return cls(clean_sku(sku))

    def receive(self, quantity: int) -> None:
        if quantity <= 0:
            raise Invalid("quantity must be at least 1", field="quantity")
        self._received(sku=self.sku, quantity=quantity)

    class Received(Aggregate.Event):
        sku: str
        quantity: int

    @event(Received)
    def _received(self, sku: str, quantity: int) -> None:
        self.available += quantity
        self.received += quantity

    def adjust(self, delta: int, reason: str) -> None:
        if delta == 0:
            raise Invalid("delta must not be 0", field="delta")
        if not reason.strip():
            raise Invalid("reason must not be blank", field="reason")
        check_text(reason, "reason", multiline=True)
        if self.available + delta < 0:
            raise Conflict(f"only {self.available} of {self.sku} available; cannot remove {-delta}")
        self._adjusted(sku=self.sku, delta=delta, reason=reason.strip())

    class Adjusted(Aggregate.Event):
        sku: str
        delta: int
        reason: str

    @event(Adjusted)
    def _adjusted(self, sku: str, delta: int, reason: str) -> None:
        self.available += delta
        self.adjusted += delta

    def is_reserved_for(self, order_id: uuid.UUID) -> bool:
        return str(order_id) in self.reservations

    def reserve(self, order_id: uuid.UUID, quantity: int) -> None:
        """Sets `quantity` aside for the order; raises InsufficientStock if fewer are available.
        Reserving for the same order again changes nothing."""
        if quantity <= 0:
            raise Invalid("quantity must be at least 1", field="quantity")
        if self.is_reserved_for(order_id):
            return
        if quantity > self.available:
            raise InsufficientStock(self.sku, quantity, self.available)
        self._reserved(sku=self.sku, order_id=order_id, quantity=quantity)

    class Reserved(Aggregate.Event):
        sku: str
        order_id: uuid.UUID
        quantity: int

    @event(Reserved)
    def _reserved(self, sku: str, order_id: uuid.UUID, quantity: int) -> None:
        self.available -= quantity
        self.reserved += quantity
        self.reservations[str(order_id)] = quantity

    def release(self, order_id: uuid.UUID) -> None:
        """Returns the order's units to available stock; nothing if it holds none."""
        if self.is_reserved_for(order_id):
            self._released(sku=self.sku, order_id=order_id, quantity=self.reservations[str(order_id)])

    class Released(Aggregate.Event):
        sku: str
        order_id: uuid.UUID
        quantity: int

    @event(Released)
    def _released(self, sku: str, order_id: uuid.UUID, quantity: int) -> None:
        self.available += quantity
        self.reserved -= quantity
        del self.reservations[str(order_id)]

    def commit(self, order_id: uuid.UUID) -> None:
        """The order shipped: its units leave the warehouse; nothing if it holds none."""
        if self.is_reserved_for(order_id):
            self._committed(sku=self.sku, order_id=order_id, quantity=self.reservations[str(order_id)])

    class Committed(Aggregate.Event):
        sku: str
        order_id: uuid.UUID
        quantity: int

    @event(Committed)
    def _committed(self, sku: str, order_id: uuid.UUID, quantity: int) -> None:
        self.reserved -= quantity
        self.committed += quantity
        del self.reservations[str(order_id)]

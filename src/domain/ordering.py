"""Ordering: an order's lines (prices captured when it is placed) and its life:
placed -> reserved | rejected | cancelled; reserved -> paid | cancelled; paid -> shipped |
cancelled; shipped -> delivered. The saga moves it to reserved, rejected or (unpaid in time)
cancelled; the customer may cancel until it ships."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from eventsourcing.domain import Aggregate, event

from domain.errors import Conflict, Invalid
from domain.text import check_text

MAX_LINES = 100
MAX_QUANTITY = 10_000


class OrderStatus(StrEnum):
    PLACED = "placed"
    RESERVED = "reserved"
    REJECTED = "rejected"
    PAID = "paid"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class OrderLine:
    """A line of an order: the product, how many, and its unit price when the order was placed."""

    sku: str
    quantity: int
    unit_price_minor: int
    currency: str

    @property
    def total_minor(self) -> int:
        return self.unit_price_minor * self.quantity


class Order(Aggregate):
    class Placed(Aggregate.Created):
        """Version 1 stored each line as a plain JSON object with the same four keys; version 2
        stores `OrderLine` values (the applications' transcoder knows them), and `upcast_v1_v2`
        turns the old objects into them."""

        customer_id: uuid.UUID
        lines: Sequence[OrderLine]
        total_minor: int
        currency: str

        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["lines"] = [OrderLine(**line) if isinstance(line, dict) else line for line in state["lines"]]

    @event(Placed)
    def __init__(self, customer_id: uuid.UUID, lines: Sequence[OrderLine], total_minor: int, currency: str) -> None:
        self.customer_id = customer_id
        self.lines = tuple(lines)
        self.total_minor = total_minor
        self.currency = currency
        self.status = OrderStatus.PLACED
        self.reason: str | None = None
        self.payment_ref: str | None = None
        self.payment_due_at: datetime | None = None

    @classmethod
    def place(cls, customer_id: uuid.UUID, lines: Sequence[OrderLine]) -> Order:
        """`lines` priced as the products are now."""
        if not lines:
            raise Invalid("an order needs at least one line", field="lines")
        if len(lines) > MAX_LINES:
            raise Invalid(f"an order has at most {MAX_LINES} lines", field="lines")
        skus = [line.sku for line in lines]
        if len(set(skus)) != len(skus):
            raise Invalid("each SKU may appear on one line only", field="lines")
        if any(not 1 <= line.quantity <= MAX_QUANTITY for line in lines):
            raise Invalid(f"quantities must be from 1 to {MAX_QUANTITY}", field="lines")
        currencies = {line.currency for line in lines}
        if len(currencies) != 1:
            raise Invalid("all lines of an order must be priced in one currency", field="lines")
        total = sum(line.total_minor for line in lines)
        return cls(customer_id, list(lines), total, currencies.pop())

    def _expect(self, *statuses: OrderStatus, doing: str) -> None:
        if self.status not in statuses:
            raise Conflict(f"cannot {doing} an order that is {self.status.value}")

    def mark_reserved(self, payment_due_at: datetime) -> None:
        if self.status is OrderStatus.RESERVED:
            return
        self._expect(OrderStatus.PLACED, doing="reserve")
        self._reserved(payment_due_at=payment_due_at)

    class Reserved(Aggregate.Event):
        payment_due_at: datetime

    @event(Reserved)
    def _reserved(self, payment_due_at: datetime) -> None:
        self.status = OrderStatus.RESERVED
        self.payment_due_at = payment_due_at

    def reject(self, reason: str) -> None:
        if self.status is OrderStatus.REJECTED:
            return
        self._expect(OrderStatus.PLACED, doing="reject")
        self._rejected(reason=reason)

    class Rejected(Aggregate.Event):
        reason: str

    @event(Rejected)
    def _rejected(self, reason: str) -> None:
        self.status = OrderStatus.REJECTED
        self.reason = reason

    def pay(self, payment_ref: str) -> None:
        if not payment_ref.strip():
            raise Invalid("payment_ref must not be blank", field="payment_ref")
        check_text(payment_ref, "payment_ref")
        self._expect(OrderStatus.RESERVED, doing="pay")
        self._paid(payment_ref=payment_ref.strip(), customer_id=self.customer_id)

    class Paid(Aggregate.Event):
        """Version 2 names the customer, whose key encrypts the payment reference (their data);
        version 1 references were stored in the clear (upcast: no subject)."""

        personal_data: ClassVar[dict[str, str]] = {"payment_ref": "customer_id"}
        payment_ref: str
        customer_id: uuid.UUID | None

        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["customer_id"] = None

    @event(Paid)
    def _paid(self, payment_ref: str | None, customer_id: uuid.UUID | None) -> None:
        self.status = OrderStatus.PAID
        self.payment_ref = payment_ref

    def ship(self) -> None:
        self._expect(OrderStatus.PAID, doing="ship")
        self._shipped()

    class Shipped(Aggregate.Event):
        pass

    @event(Shipped)
    def _shipped(self) -> None:
        self.status = OrderStatus.SHIPPED

    def deliver(self) -> None:
        self._expect(OrderStatus.SHIPPED, doing="deliver")
        self._delivered()

    class Delivered(Aggregate.Event):
        pass

    @event(Delivered)
    def _delivered(self) -> None:
        self.status = OrderStatus.DELIVERED

    def cancel(self, reason: str, by: str) -> None:
        self._expect(OrderStatus.PLACED, OrderStatus.RESERVED, OrderStatus.PAID, doing="cancel")
        self._cancelled(reason=reason, by=by)

    class Cancelled(Aggregate.Event):
        reason: str
        by: str

    @event(Cancelled)
    def _cancelled(self, reason: str, by: str) -> None:
        self.status = OrderStatus.CANCELLED
        self.reason = reason

    def expire(self, now: datetime) -> None:
        """Cancels a reserved order whose payment is overdue."""
        self._expect(OrderStatus.RESERVED, doing="expire")
        if self.payment_due_at is None or now < self.payment_due_at:
            raise Conflict("the order's payment is not overdue")
        self._cancelled(reason="payment not received in time", by="saga")

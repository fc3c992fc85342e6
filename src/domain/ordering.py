"""Ordering: an order's lines (prices captured when it is placed) and its life:
placed -> reserved | rejected | cancelled; reserved -> paid | cancelled; paid -> shipped |
cancelled; shipped -> delivered. The saga moves it to reserved, rejected or (unpaid in time)
cancelled; the customer may cancel until it ships."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

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


class Order(Aggregate):
    class Placed(Aggregate.Created):
        customer_id: uuid.UUID
        lines: list[dict[str, Any]]
        total_minor: int
        currency: str

    @event(Placed)
    def __init__(self, customer_id: uuid.UUID, lines: list[dict[str, Any]], total_minor: int, currency: str) -> None:
        self.customer_id = customer_id
        self.lines = lines
        self.total_minor = total_minor
        self.currency = currency
        self.status = OrderStatus.PLACED
        self.reason: str | None = None
        self.payment_ref: str | None = None
        self.payment_due_at: datetime | None = None

    @classmethod
    def place(cls, customer_id: uuid.UUID, lines: list[dict[str, Any]]) -> Order:
        """`lines`: sku, quantity, unit_price_minor and currency of each, prices as they are now."""
        if not lines:
            raise Invalid("an order needs at least one line", field="lines")
        if len(lines) > MAX_LINES:
            raise Invalid(f"an order has at most {MAX_LINES} lines", field="lines")
        skus = [line["sku"] for line in lines]
        if len(set(skus)) != len(skus):
            raise Invalid("each SKU may appear on one line only", field="lines")
        if any(not 1 <= line["quantity"] <= MAX_QUANTITY for line in lines):
            raise Invalid(f"quantities must be from 1 to {MAX_QUANTITY}", field="lines")
        currencies = {line["currency"] for line in lines}
        if len(currencies) != 1:
            raise Invalid("all lines of an order must be priced in one currency", field="lines")
        total = sum(line["unit_price_minor"] * line["quantity"] for line in lines)
        return cls(customer_id, lines, total, currencies.pop())

    def _expect(self, *statuses: OrderStatus, doing: str) -> None:
        if self.status not in statuses:
            raise Conflict(f"cannot {doing} an order that is {self.status.value}")

    def mark_reserved(self, payment_due_at: datetime) -> None:
        if self.status is OrderStatus.RESERVED:
            return
        self._expect(OrderStatus.PLACED, doing="reserve")
        self._reserved(payment_due_at=payment_due_at)

    @event("Reserved")
    def _reserved(self, payment_due_at: datetime) -> None:
        self.status = OrderStatus.RESERVED
        self.payment_due_at = payment_due_at

    def reject(self, reason: str) -> None:
        if self.status is OrderStatus.REJECTED:
            return
        self._expect(OrderStatus.PLACED, doing="reject")
        self._rejected(reason=reason)

    @event("Rejected")
    def _rejected(self, reason: str) -> None:
        self.status = OrderStatus.REJECTED
        self.reason = reason

    def pay(self, payment_ref: str) -> None:
        if not payment_ref.strip():
            raise Invalid("payment_ref must not be blank", field="payment_ref")
        check_text(payment_ref, "payment_ref")
        self._expect(OrderStatus.RESERVED, doing="pay")
        self._paid(payment_ref=payment_ref.strip())

    @event("Paid")
    def _paid(self, payment_ref: str) -> None:
        self.status = OrderStatus.PAID
        self.payment_ref = payment_ref

    def ship(self) -> None:
        self._expect(OrderStatus.PAID, doing="ship")
        self._shipped()

    @event("Shipped")
    def _shipped(self) -> None:
        self.status = OrderStatus.SHIPPED

    def deliver(self) -> None:
        self._expect(OrderStatus.SHIPPED, doing="deliver")
        self._delivered()

    @event("Delivered")
    def _delivered(self) -> None:
        self.status = OrderStatus.DELIVERED

    def cancel(self, reason: str, by: str) -> None:
        self._expect(OrderStatus.PLACED, OrderStatus.RESERVED, OrderStatus.PAID, doing="cancel")
        self._cancelled(reason=reason, by=by)

    @event("Cancelled")
    def _cancelled(self, reason: str, by: str) -> None:
        self.status = OrderStatus.CANCELLED
        self.reason = reason

    def expire(self, now: datetime) -> None:
        """Cancels a reserved order whose payment is overdue."""
        self._expect(OrderStatus.RESERVED, doing="expire")
        if self.payment_due_at is None or now < self.payment_due_at:
            raise Conflict("the order's payment is not overdue")
        self._cancelled(reason="payment not received in time", by="saga")

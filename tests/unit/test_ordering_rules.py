"""The rules of an order's life: given an order, when a step, then events or an error."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from domain.errors import Conflict, Invalid
from domain.ordering import MAX_LINES, MAX_QUANTITY, Order, OrderLine, OrderStatus
from tests.unit.specs import given, raises

CUSTOMER = uuid.uuid4()
DUE = datetime(2027, 1, 1, 12, 0, tzinfo=UTC)


def line(sku: str, quantity: int, price: int = 250, currency: str = "EUR") -> OrderLine:
    """A line as the write side passes it: the price as it is when the order is placed."""
    return OrderLine(sku, quantity, price, currency)


STEPS: dict[OrderStatus, Callable[[Order], None]] = {
    OrderStatus.RESERVED: lambda o: o.mark_reserved(DUE),
    OrderStatus.REJECTED: lambda o: o.reject("only 1 of PEN available, 2 requested"),
    OrderStatus.PAID: lambda o: o.pay("psp-1"),
    OrderStatus.SHIPPED: lambda o: o.ship(),
    OrderStatus.DELIVERED: lambda o: o.deliver(),
    OrderStatus.CANCELLED: lambda o: o.cancel("changed my mind", "customer"),
}
PATHS = {
    OrderStatus.PLACED: [],
    OrderStatus.RESERVED: [OrderStatus.RESERVED],
    OrderStatus.REJECTED: [OrderStatus.REJECTED],
    OrderStatus.PAID: [OrderStatus.RESERVED, OrderStatus.PAID],
    OrderStatus.SHIPPED: [OrderStatus.RESERVED, OrderStatus.PAID, OrderStatus.SHIPPED],
    OrderStatus.DELIVERED: [OrderStatus.RESERVED, OrderStatus.PAID, OrderStatus.SHIPPED, OrderStatus.DELIVERED],
    OrderStatus.CANCELLED: [OrderStatus.CANCELLED],
}


def order(status: OrderStatus = OrderStatus.PLACED) -> Order:
    o = Order.place(CUSTOMER, [line("PEN", 3, 250), line("INK", 2, 1000)])
    for step in PATHS[status]:
        STEPS[step](o)
    assert o.status is status
    return o


def test_placing_an_order_captures_its_lines_and_total() -> None:
    o = Order.place(CUSTOMER, [line("PEN", 3, 250), line("INK", 2, 1000)])
    assert (o.customer_id, o.total_minor, o.currency, o.status) == (CUSTOMER, 2750, "EUR", OrderStatus.PLACED)
    assert [(ln.sku, ln.quantity) for ln in o.lines] == [("PEN", 3), ("INK", 2)]
    assert (o.reason, o.payment_ref, o.payment_due_at) == (None, None, None)
    assert Order.place(CUSTOMER, [line("PEN", MAX_QUANTITY, 0)]).total_minor == 0
    assert len(Order.place(CUSTOMER, [line(f"S{i}", 1) for i in range(MAX_LINES)]).lines) == MAX_LINES


@pytest.mark.parametrize(
    ("lines", "says"),
    [
        ([], "at least one line"),
        ([line(f"S{i}", 1) for i in range(MAX_LINES + 1)], f"at most {MAX_LINES} lines"),
        ([line("PEN", 1), line("PEN", 2)], "one line only"),
        ([line("PEN", 0)], "quantities"),
        ([line("PEN", MAX_QUANTITY + 1)], "quantities"),
        ([line("PEN", 1, currency="EUR"), line("INK", 1, currency="USD")], "one currency"),
    ],
)
def test_an_order_that_breaks_a_rule_of_its_lines_is_refused(lines: list[OrderLine], says: str) -> None:
    with raises(Invalid) as refused:
        Order.place(CUSTOMER, lines)
    assert refused.value.field == "lines" and says in refused.value.reason


def test_the_saga_reserves_or_rejects_a_placed_order_once() -> None:
    given(order()).when(STEPS[OrderStatus.RESERVED]).then("Reserved", payment_due_at=DUE).state(
        status=OrderStatus.RESERVED, payment_due_at=DUE
    )
    given(order(OrderStatus.RESERVED)).when(STEPS[OrderStatus.RESERVED]).then_nothing()
    given(order()).when(lambda o: o.reject("out of stock")).then("Rejected", reason="out of stock").state(
        status=OrderStatus.REJECTED, reason="out of stock"
    )
    given(order(OrderStatus.REJECTED)).when(lambda o: o.reject("again")).then_nothing()
    given(order(OrderStatus.REJECTED)).when(STEPS[OrderStatus.RESERVED]).rejected(
        Conflict, "cannot reserve an order that is rejected"
    )
    given(order(OrderStatus.RESERVED)).when(lambda o: o.reject("late")).rejected(
        Conflict, "cannot reject an order that is reserved"
    )
    given(order(OrderStatus.CANCELLED)).when(STEPS[OrderStatus.RESERVED]).rejected(Conflict, "cancelled")


def test_paying_shipping_and_delivering_go_in_order() -> None:
    given(order(OrderStatus.RESERVED)).when(lambda o: o.pay("  psp-123 ")).then("Paid", payment_ref="psp-123").state(
        status=OrderStatus.PAID, payment_ref="psp-123"
    )
    given(order(OrderStatus.PAID)).when(lambda o: o.ship()).then("Shipped").state(status=OrderStatus.SHIPPED)
    given(order(OrderStatus.SHIPPED)).when(lambda o: o.deliver()).then("Delivered").state(status=OrderStatus.DELIVERED)
    given(order()).when(lambda o: o.pay("psp-1")).rejected(Conflict, "cannot pay an order that is placed")
    given(order(OrderStatus.PAID)).when(lambda o: o.pay("psp-2")).rejected(Conflict, "cannot pay an order that is paid")
    given(order(OrderStatus.RESERVED)).when(lambda o: o.ship()).rejected(Conflict, "cannot ship")
    given(order(OrderStatus.PAID)).when(lambda o: o.deliver()).rejected(Conflict, "cannot deliver")
    given(order(OrderStatus.RESERVED)).when(lambda o: o.pay("   ")).rejected(Invalid, field="payment_ref")
    given(order(OrderStatus.RESERVED)).when(lambda o: o.pay("psp\n1")).rejected(Invalid, field="payment_ref")


@pytest.mark.parametrize("status", [OrderStatus.PLACED, OrderStatus.RESERVED, OrderStatus.PAID])
def test_an_order_can_be_cancelled_until_it_ships(status: OrderStatus) -> None:
    given(order(status)).when(lambda o: o.cancel("changed my mind", "customer")).then(
        "Cancelled", reason="changed my mind", by="customer"
    ).state(status=OrderStatus.CANCELLED, reason="changed my mind")


@pytest.mark.parametrize(
    "status", [OrderStatus.SHIPPED, OrderStatus.DELIVERED, OrderStatus.REJECTED, OrderStatus.CANCELLED]
)
def test_an_order_that_shipped_or_ended_cannot_be_cancelled(status: OrderStatus) -> None:
    given(order(status)).when(lambda o: o.cancel("too late", "customer")).rejected(
        Conflict, f"cannot cancel an order that is {status.value}"
    )


def test_an_unpaid_reserved_order_expires_once_its_payment_is_overdue() -> None:
    given(order(OrderStatus.RESERVED)).when(lambda o: o.expire(DUE)).then(
        "Cancelled", reason="payment not received in time", by="saga"
    ).state(status=OrderStatus.CANCELLED)
    given(order(OrderStatus.RESERVED)).when(lambda o: o.expire(DUE + timedelta(days=1))).then("Cancelled")
    given(order(OrderStatus.RESERVED)).when(lambda o: o.expire(DUE - timedelta(seconds=1))).rejected(
        Conflict, "not overdue"
    )
    given(order(OrderStatus.PAID)).when(lambda o: o.expire(DUE + timedelta(days=1))).rejected(
        Conflict, "cannot expire an order that is paid"
    )
    given(order()).when(lambda o: o.expire(DUE)).rejected(Conflict, "cannot expire an order that is placed")

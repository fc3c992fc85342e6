"""The rules of stock: given a SKU's stock, when a change, then events or an error; and, for any
sequence of changes, no unit is lost or spent twice."""

from __future__ import annotations

import uuid

from eventsourcing.application import project_aggregate
from hypothesis import given as for_all
from hypothesis import strategies as st

from domain.errors import Conflict, Invalid
from domain.inventory import InsufficientStock, Stock, stock_id
from tests.unit.specs import given, raises

ORDER, OTHER = uuid.uuid4(), uuid.uuid4()


def stock(received: int = 10, *reserved_for: tuple[uuid.UUID, int]) -> Stock:
    s = Stock.open("pen-1")
    if received:
        s.receive(received)
    for order, quantity in reserved_for:
        s.reserve(order, quantity)
    return s


def test_opening_stock_cleans_the_sku_and_keys_it_by_sku() -> None:
    s = Stock.open(" pen-1 ")
    assert (s.sku, s.available, s.reserved, s.committed, s.reservations) == ("PEN-1", 0, 0, 0, {})
    assert s.id == stock_id("PEN-1")
    with raises(Invalid):
        Stock.open("no spaces allowed")


def test_receiving() -> None:
    given(stock(0)).when(lambda s: s.receive(5)).then("Received", sku="PEN-1", quantity=5).state(
        available=5, received=5
    )
    given(stock(0)).when(lambda s: s.receive(0)).rejected(Invalid, field="quantity")
    given(stock(0)).when(lambda s: s.receive(-3)).rejected(Invalid, field="quantity")


def test_adjusting() -> None:
    given(stock(10)).when(lambda s: s.adjust(-2, "  damaged  ")).then("Adjusted", delta=-2, reason="damaged").state(
        available=8, adjusted=-2
    )
    given(stock(10)).when(lambda s: s.adjust(3, "found in the back\n(shelf 4)")).then("Adjusted", delta=3)
    given(stock(10)).when(lambda s: s.adjust(-10, "flood")).then("Adjusted").state(available=0)
    given(stock(10)).when(lambda s: s.adjust(-11, "flood")).rejected(Conflict, "only 10 of PEN-1 available")
    given(stock(10, (ORDER, 8))).when(lambda s: s.adjust(-3, "lost")).rejected(Conflict, "only 2")
    given(stock(10)).when(lambda s: s.adjust(0, "nothing")).rejected(Invalid, field="delta")
    given(stock(10)).when(lambda s: s.adjust(1, "   ")).rejected(Invalid, field="reason")
    given(stock(10)).when(lambda s: s.adjust(1, "bell\x07")).rejected(Invalid, field="reason")


def test_reserving_for_an_order() -> None:
    given(stock(10)).when(lambda s: s.reserve(ORDER, 4)).then(
        "Reserved", sku="PEN-1", order_id=ORDER, quantity=4
    ).state(available=6, reserved=4, reservations={str(ORDER): 4})
    given(stock(10)).when(lambda s: s.reserve(ORDER, 10)).then("Reserved").state(available=0)
    given(stock(10, (ORDER, 4))).when(lambda s: s.reserve(ORDER, 4)).then_nothing()
    given(stock(10, (ORDER, 4))).when(lambda s: s.reserve(ORDER, 9)).then_nothing()  # keyed by order, not amount
    given(stock(10)).when(lambda s: s.reserve(ORDER, 0)).rejected(Invalid, field="quantity")


def test_reserving_more_than_is_available_says_how_much_there_is() -> None:
    given(stock(10, (OTHER, 7))).when(lambda s: s.reserve(ORDER, 4)).rejected(
        InsufficientStock, "only 3 of PEN-1 available, 4 requested", field="quantity"
    )
    with raises(InsufficientStock) as refused:
        stock(2).reserve(ORDER, 5)
    assert (refused.value.sku, refused.value.requested, refused.value.available) == ("PEN-1", 5, 2)
    assert isinstance(refused.value, Conflict)


def test_releasing_and_committing_an_orders_units() -> None:
    given(stock(10, (ORDER, 4))).when(lambda s: s.release(ORDER)).then("Released", order_id=ORDER, quantity=4).state(
        available=10, reserved=0, reservations={}
    )
    given(stock(10, (ORDER, 4))).when(lambda s: s.commit(ORDER)).then("Committed", order_id=ORDER, quantity=4).state(
        available=6, reserved=0, committed=4, reservations={}
    )
    given(stock(10)).when(lambda s: s.release(ORDER)).then_nothing()
    given(stock(10)).when(lambda s: s.commit(ORDER)).then_nothing()
    given(stock(10, (ORDER, 4)), lambda s: s.release(ORDER)).when(lambda s: s.release(ORDER)).then_nothing()
    given(stock(10, (ORDER, 4)), lambda s: s.commit(ORDER)).when(lambda s: s.release(ORDER)).then_nothing()
    given(stock(10, (ORDER, 4), (OTHER, 1))).when(lambda s: s.release(OTHER)).then("Released", quantity=1).state(
        reservations={str(ORDER): 4}
    )


ORDERS = [uuid.UUID(int=n) for n in range(1, 5)]
CHANGES = st.lists(
    st.one_of(
        st.tuples(st.just("receive"), st.integers(-2, 20)),
        st.tuples(st.just("adjust"), st.integers(-15, 15)),
        st.tuples(st.sampled_from(["reserve", "release", "commit"]), st.integers(0, 3), st.integers(-1, 12)),
    ),
    max_size=40,
)


@for_all(CHANGES)
def test_no_sequence_of_changes_loses_a_unit_or_goes_below_zero(changes: list[tuple[object, ...]]) -> None:
    s = stock(0)
    model_reserved: dict[str, int] = {}
    for change in changes:
        try:
            match change:
                case ("receive", int(quantity)):
                    s.receive(quantity)
                case ("adjust", int(delta)):
                    s.adjust(delta, "count")
                case ("reserve", int(order), int(quantity)):
                    s.reserve(ORDERS[order], quantity)
                    model_reserved.setdefault(str(ORDERS[order]), quantity)
                case ("release" | "commit" as action, int(order), _):
                    getattr(s, action)(ORDERS[order])
                    model_reserved.pop(str(ORDERS[order]), None)
        except (Invalid, Conflict):
            pass
        assert s.available >= 0 and s.reserved >= 0
        assert s.available + s.reserved + s.committed == s.received + s.adjusted
        assert s.reservations == model_reserved and s.reserved == sum(model_reserved.values())
    replayed = project_aggregate(None, s.collect_events())
    assert replayed is not None and vars(replayed) == vars(s), "replaying the events gives another stock"

"""Ordering's write side: a member places an order (prices captured from the catalog now), pays
it; managers ship and deliver; the customer cancels until it ships. Reservation, rejection and
expiry are the saga's (commands/order_saga.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from commands.base import (
    ChronicleApplication,
    CommandResult,
    Context,
    FactoryMaker,
    KeyRecorded,
    check_version,
    command,
)
from domain import access
from domain.catalog import Product, clean_sku, product_id
from domain.errors import Forbidden, Invalid, NotFound
from domain.ordering import Order, OrderLine


class OrderingApplication(ChronicleApplication):
    name = "ordering"

    def __init__(
        self,
        make_factory: FactoryMaker,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        key_recorded: KeyRecorded | None = None,
    ) -> None:
        super().__init__(make_factory, key_recorded=key_recorded)
        self.clock = clock

    @command
    def place_order(self, ctx: Context, lines: list[dict[str, Any]]) -> CommandResult:
        """Captures each product's current price. The order is appended only if none of its products
        changed since it was read (a cached product might be stale: then it is decided again)."""
        actor = ctx.authenticated()
        products = [self._product(line["sku"]) for line in lines]
        priced = [
            OrderLine(p.sku, int(line["quantity"]), p.price_minor, p.currency)
            for p, line in zip(products, lines, strict=True)
        ]
        order = Order.place(actor.user_id, priced)
        return self.record(ctx, order, result_of=order, depends_on=list({p.id: p for p in products}.values()))

    def _product(self, sku: str) -> Product:
        sku = clean_sku(sku)
        try:
            product = self.load(Product, product_id(sku), "product", for_update=False)
        except NotFound:
            raise Invalid(f"no product with SKU {sku}", field="lines") from None
        if not product.active:
            raise Invalid(f"product {sku} is discontinued", field="lines")
        return product

    def order(self, order_id: uuid.UUID, *, fresh: bool = False) -> Order:
        return self.load(Order, order_id, "order", for_update=False, fresh=fresh)

    @command
    def pay(
        self, ctx: Context, order_id: uuid.UUID, payment_ref: str, expected_version: int | None = None
    ) -> CommandResult:
        order = self._own_order(ctx, order_id, expected_version)
        order.pay(payment_ref)
        return self.record(ctx, order, result_of=order)

    @command
    def ship(self, ctx: Context, order_id: uuid.UUID, expected_version: int | None = None) -> CommandResult:
        order = self._staff_order(ctx, order_id, expected_version)
        order.ship()
        return self.record(ctx, order, result_of=order)

    @command
    def deliver(self, ctx: Context, order_id: uuid.UUID, expected_version: int | None = None) -> CommandResult:
        order = self._staff_order(ctx, order_id, expected_version)
        order.deliver()
        return self.record(ctx, order, result_of=order)

    @command
    def cancel(self, ctx: Context, order_id: uuid.UUID, expected_version: int | None = None) -> CommandResult:
        order = self._own_order(ctx, order_id, expected_version)
        by = "customer" if order.customer_id == ctx.authenticated().user_id else "staff"
        order.cancel(f"cancelled by the {by}", by=by)
        return self.record(ctx, order, result_of=order)

    @command
    def expire(self, ctx: Context, order_id: uuid.UUID) -> CommandResult:
        order = self.load(Order, order_id, "order")
        order.expire(self.clock())
        return self.record(ctx, order, result_of=order)

    def _own_order(self, ctx: Context, order_id: uuid.UUID, expected_version: int | None) -> Order:
        actor = ctx.authenticated()
        order = self.load(Order, order_id, "order")
        if not access.may_see_order(actor, customer_id=order.customer_id):
            raise NotFound(f"order {order_id} not found")
        check_version(order, expected_version)
        return order

    def _staff_order(self, ctx: Context, order_id: uuid.UUID, expected_version: int | None) -> Order:
        actor = ctx.authenticated()
        order = self.load(Order, order_id, "order")
        if not access.may_fulfil_orders(actor):
            if access.may_see_order(actor, customer_id=order.customer_id):
                raise Forbidden("only managers and admins may ship or deliver orders")
            raise NotFound(f"order {order_id} not found")
        check_version(order, expected_version)
        return order

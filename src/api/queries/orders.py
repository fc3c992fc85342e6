"""Query routes of ordering: a member sees their own orders; managers and admins see every order
(and may filter by customer). Anyone else's order is 404, as if it did not exist."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get
from litestar.params import Parameter

from api.contract import ETAG, query
from api.queries.common import Cursor, Limit, MinPosition, decode_cursor, encode_cursor, etag, wait_for_position
from api.runtime import RUNTIME, Runtime
from commands.base import Actor
from domain import access
from domain.errors import NotFound
from domain.ordering import OrderStatus
from projections.orders import OrderHistory, order_and_history, order_rows

READS = [OrderHistory.name]


class OrderLine(msgspec.Struct):
    sku: str
    quantity: int
    unit_price_minor: int
    currency: str


class StatusChange(msgspec.Struct, omit_defaults=True):
    status: str
    at: datetime
    reason: str | None = None


class OrderSummary(msgspec.Struct):
    id: uuid.UUID
    customer_id: uuid.UUID
    status: str
    lines: list[OrderLine]
    total_minor: int
    currency: str
    reason: str | None
    payment_ref: str | None
    payment_due_at: datetime | None
    placed_at: datetime
    updated_at: datetime
    version: int


class OrderPage(msgspec.Struct):
    items: list[OrderSummary]
    next_cursor: str | None = None


class OrderView(OrderSummary):
    history: list[StatusChange] = []


def _summary(row: tuple[Any, ...]) -> OrderSummary:
    return OrderSummary(row[0], row[1], row[2], msgspec.convert(row[3], list[OrderLine]), *row[4:12])


class OrderQueries(Controller):
    path = "/v1/orders"
    tags = ["queries"]
    dependencies = RUNTIME

    @get(
        operation_id="ListOrders",
        summary="The caller's orders, newest first (every order for managers and admins)",
        responses=query(),
    )
    async def list_orders(
        self,
        request: Request[Actor, Any, Any],
        runtime: Runtime,
        status: OrderStatus | None = None,
        customer_id: Annotated[uuid.UUID | None, Parameter(description="managers and admins: one customer's")] = None,
        limit: Limit = 50,
        cursor: Cursor = None,
        min_position: MinPosition = None,
    ) -> OrderPage:
        await wait_for_position(runtime, request, min_position, READS)
        actor = request.user
        customer = customer_id if access.sees_every_order(actor) else actor.user_id
        after = decode_cursor(cursor, tuple[datetime, uuid.UUID]) if cursor else None
        rows = await order_rows(runtime.views, customer_id=customer, status=status, after=after, limit=limit + 1)
        items, more = [_summary(row) for row in rows[:limit]], len(rows) > limit
        return OrderPage(items, encode_cursor([items[-1].placed_at.isoformat(), str(items[-1].id)]) if more else None)

    @get(
        "/{order_id:uuid}",
        operation_id="GetOrder",
        summary="An order, with each status it went through",
        responses=query(404),
        response_headers=[ETAG],
    )
    async def get_order(
        self, request: Request[Actor, Any, Any], runtime: Runtime, order_id: uuid.UUID, min_position: MinPosition = None
    ) -> Response[OrderView]:
        await wait_for_position(runtime, request, min_position, READS)
        found = await order_and_history(runtime.views, order_id)
        if found is None or not access.may_see_order(request.user, customer_id=found[0][1]):
            raise NotFound(f"order {order_id} not found")
        row, history = found
        order = OrderView(**msgspec.structs.asdict(_summary(row)), history=[StatusChange(*h) for h in history])
        return Response(order, headers=etag(order.version))

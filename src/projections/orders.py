"""OrderHistory: every order with its lines, total, status and reason, and each status it went
through with its time. The saga's payment-expiry sweep reads reserved orders' deadlines here."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from domain.identity import User
from domain.ordering import Order, OrderStatus
from infra.eventstore.envelope import EventEnvelope
from projections.base import SqlProjection, SqlView, uuid_or_none, when
from projections.events import event_class, handled

STATUS_AFTER: dict[type[Any], OrderStatus] = {
    Order.Placed: OrderStatus.PLACED,
    Order.Reserved: OrderStatus.RESERVED,
    Order.Rejected: OrderStatus.REJECTED,
    Order.Paid: OrderStatus.PAID,
    Order.Shipped: OrderStatus.SHIPPED,
    Order.Delivered: OrderStatus.DELIVERED,
    Order.Cancelled: OrderStatus.CANCELLED,
}


class OrderHistory(SqlProjection):
    """A customer's erasure (User.Erased) removes the payment references of their orders."""

    name = "order_history"
    version = 2
    schema = "ordering_views"
    description = "orders: lines, total, status, reason, payment deadline; status history"
    handles = handled(*STATUS_AFTER, User.Erased)
    tables = {
        "orders": "CREATE TABLE {orders} (id uuid PRIMARY KEY, customer_id uuid NOT NULL, status text NOT NULL,"
        " lines jsonb NOT NULL, total_minor bigint NOT NULL, currency text NOT NULL, reason text,"
        " payment_ref text, payment_due_at timestamptz, placed_at timestamptz NOT NULL,"
        " updated_at timestamptz NOT NULL, version bigint NOT NULL, correlation_id uuid,"
        " deadline_event_id uuid);"
        " CREATE INDEX ON {orders} (customer_id, placed_at, id);"
        " CREATE INDEX ON {orders} (placed_at, id);"
        " CREATE INDEX ON {orders} (payment_due_at) WHERE status = 'reserved'",
        "history": "CREATE TABLE {history} (order_id uuid NOT NULL, version bigint NOT NULL, status text NOT NULL,"
        " at timestamptz NOT NULL, reason text, PRIMARY KEY (order_id, version))",
    }
    keys = {"orders": ("id",), "history": ("order_id", "version")}

    def apply(self, event: EventEnvelope, view: SqlView) -> None:
        data, kind = event.data, event_class(event)
        if kind is User.Erased:
            view.execute("UPDATE {orders} SET payment_ref = NULL WHERE customer_id = %s", (event.stream_id,))
            return
        if kind not in STATUS_AFTER:
            return  # not one of `handles`: the projector never sends it
        status = STATUS_AFTER[kind].value
        reason = data.get("reason")
        if kind is Order.Placed:
            view.insert(
                "orders",
                {
                    "id": event.stream_id,
                    "customer_id": uuid_or_none(data["customer_id"]),
                    "status": status,
                    "lines": Jsonb(data["lines"]),
                    "total_minor": int(data["total_minor"]),
                    "currency": data["currency"],
                    "reason": None,
                    "payment_ref": None,
                    "payment_due_at": None,
                    "placed_at": when(event),
                    "updated_at": when(event),
                    "version": event.version,
                    "correlation_id": event.correlation_id,
                    "deadline_event_id": None,
                },
            )
        else:
            columns: dict[str, object] = {"status": status, "updated_at": when(event), "version": event.version}
            if reason is not None:
                columns["reason"] = reason
            if kind is Order.Reserved:
                columns |= {"payment_due_at": data["payment_due_at"], "deadline_event_id": event.event_id}
            if kind is Order.Paid:
                columns["payment_ref"] = data["payment_ref"]
            view.update("orders", (event.stream_id,), columns)
        view.insert(
            "history",
            {
                "order_id": event.stream_id,
                "version": event.version,
                "status": status,
                "at": when(event),
                "reason": reason,
            },
        )


# -- queries ------------------------------------------------------------------------------------------
# They return rows of this view's tables; the API shapes them into its response types (whose module
# is part of the OpenAPI document: a generic `Page[T]` is named after T's module).

ORDER_COLUMNS = (
    "id, customer_id, status, lines, total_minor, currency, reason, payment_ref, payment_due_at, placed_at,"
    " updated_at, version"
)
HISTORY_COLUMNS = "status, at, reason"
Rows = list[tuple[Any, ...]]


async def order_rows(
    views: AsyncConnectionPool[AsyncConnection[Any]],
    *,
    customer_id: uuid.UUID | None,
    status: OrderStatus | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> Rows:
    """ORDER_COLUMNS of up to `limit` orders newest first (of one customer, or all), after the
    cursor's (placed_at, id)."""
    where: list[str] = []
    params: dict[str, Any] = {"limit": limit}
    if customer_id is not None:
        where.append("customer_id = %(customer)s")
        params["customer"] = customer_id
    if status is not None:
        where.append("status = %(status)s")
        params["status"] = status.value
    if after is not None:
        where.append("(placed_at, id) < (%(placed)s, %(last)s)")
        params |= {"placed": after[0], "last": after[1]}
    sql = (
        f"SELECT {ORDER_COLUMNS} FROM ordering_views.orders"
        f"{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY placed_at DESC, id DESC LIMIT %(limit)s"
    )
    async with views.connection() as conn:
        rows: Rows = await (await conn.execute(sql, params)).fetchall()
    return rows


async def order_and_history(
    views: AsyncConnectionPool[AsyncConnection[Any]], order_id: uuid.UUID
) -> tuple[tuple[Any, ...], Rows] | None:
    """The order's ORDER_COLUMNS and its HISTORY_COLUMNS in order, or None."""
    async with views.connection() as conn:
        row = await (
            await conn.execute(f"SELECT {ORDER_COLUMNS} FROM ordering_views.orders WHERE id = %s", (order_id,))
        ).fetchone()
        if row is None:
            return None
        history = await (
            await conn.execute(
                f"SELECT {HISTORY_COLUMNS} FROM ordering_views.history WHERE order_id = %s ORDER BY version",
                (order_id,),
            )
        ).fetchall()
    return row, history

"""OrderHistory: every order with its lines, total, status and reason, and each status it went
through with its time. The saga's payment-expiry sweep reads reserved orders' deadlines here."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

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
    name = "order_history"
    version = 1
    schema = "ordering_views"
    description = "orders: lines, total, status, reason, payment deadline; status history"
    handles = handled(*STATUS_AFTER)
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

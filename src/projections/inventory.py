"""StockLevels: inventory's own view of every SKU's stock (available, reserved, committed, received,
adjusted) and of every order's reservation, for stock checks and the order benchmark's balance."""

from __future__ import annotations

from typing import Any

import psycopg

from domain.inventory import Stock
from infra.eventstore.envelope import EventEnvelope
from projections.base import SqlProjection, SqlView, uuid_or_none, when
from projections.events import event_class, handled


class StockLevels(SqlProjection):
    name = "stock_levels"
    version = 1
    schema = "inventory_views"
    description = "stock per SKU (available, reserved, committed, received, adjusted); reservations per order"
    handles = handled(Stock.Opened, Stock.Received, Stock.Adjusted, Stock.Reserved, Stock.Released, Stock.Committed)
    tables = {
        "stock": 'CREATE TABLE {stock} (sku text COLLATE "C" PRIMARY KEY, available bigint NOT NULL,'
        " reserved bigint NOT NULL, committed bigint NOT NULL, received bigint NOT NULL,"
        " adjusted bigint NOT NULL, updated_at timestamptz NOT NULL, version bigint NOT NULL)",
        "reservations": 'CREATE TABLE {reservations} (order_id uuid NOT NULL, sku text COLLATE "C" NOT NULL,'
        " quantity bigint NOT NULL, state text NOT NULL, updated_at timestamptz NOT NULL,"
        " PRIMARY KEY (order_id, sku));"
        " CREATE INDEX ON {reservations} (sku) WHERE state = 'reserved'",
    }
    keys = {"stock": ("sku",), "reservations": ("order_id", "sku")}

    def apply(self, event: EventEnvelope, view: SqlView) -> None:
        data = event.data
        sku = str(data["sku"])
        kind = event_class(event)
        if kind is Stock.Opened:
            view.insert(
                "stock",
                {
                    "sku": sku,
                    "available": 0,
                    "reserved": 0,
                    "committed": 0,
                    "received": 0,
                    "adjusted": 0,
                    "updated_at": when(event),
                    "version": event.version,
                },
            )
            return
        quantity = int(data.get("quantity", 0))
        match kind:
            case Stock.Received:
                self._add(view, sku, available=quantity, received=quantity)
            case Stock.Adjusted:
                self._add(view, sku, available=int(data["delta"]), adjusted=int(data["delta"]))
            case Stock.Reserved:
                self._add(view, sku, available=-quantity, reserved=quantity)
                view.insert(
                    "reservations",
                    {
                        "order_id": uuid_or_none(data["order_id"]),
                        "sku": sku,
                        "quantity": quantity,
                        "state": "reserved",
                        "updated_at": when(event),
                    },
                )
            case Stock.Released | Stock.Committed:
                if kind is Stock.Released:
                    self._add(view, sku, available=quantity, reserved=-quantity)
                else:
                    self._add(view, sku, reserved=-quantity, committed=quantity)
                view.update(
                    "reservations",
                    (uuid_or_none(data["order_id"]), sku),
                    {"state": event.type.removeprefix("Stock.").lower(), "updated_at": when(event)},
                )
            case _:
                return  # not one of `handles`: the projector never sends it
        view.update("stock", (sku,), {"updated_at": when(event), "version": event.version})

    @staticmethod
    def _add(view: SqlView, sku: str, **deltas: int) -> None:
        for column, delta in deltas.items():
            if delta:
                view.increment("stock", (sku,), column, delta)


# -- queries ------------------------------------------------------------------------------------------

STOCK_COLUMNS = "available, reserved, committed, received, adjusted"


def stock_row(conn: psycopg.Connection[Any], sku: str) -> tuple[Any, ...] | None:
    """The SKU's STOCK_COLUMNS, or None. (Synchronous: its reader is the order benchmark's balance
    check, which compares it with the aggregate.)"""
    row: tuple[Any, ...] | None = conn.execute(
        f"SELECT {STOCK_COLUMNS} FROM inventory_views.stock WHERE sku = %s", (sku,)
    ).fetchone()
    return row

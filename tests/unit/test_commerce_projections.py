"""Each catalog, inventory and ordering projection's `apply`, on representative events, through
the projector's buffered views: the rows and keys it writes."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from psycopg.types.json import Jsonb

from domain.catalog import Product
from domain.inventory import Stock
from domain.ordering import Order, OrderLine
from projections.catalog import SEPARATOR, CatalogCache, ProductCatalog
from projections.inventory import StockLevels
from projections.orders import OrderHistory
from tests.unit.views import Add, Log, apply_redis, apply_sql, at, commands

ORDER, CUSTOMER = uuid.uuid4(), uuid.uuid4()
DUE = datetime(2027, 1, 1, 12, 0, tzinfo=UTC)


def test_product_catalog_keeps_each_product_with_its_price_and_stock() -> None:
    log, projection = Log(), ProductCatalog()
    product, stock = Product.create("lamp-1", "Desk Lamp", "Brass", 4999, "EUR"), Stock.open("LAMP-1")
    (created,) = log.record(product)
    assert apply_sql(projection, [created]).row("products") == {
        "sku": "LAMP-1",
        "name": "Desk Lamp",
        "name_key": "desk lamp",
        "description": "Brass",
        "price_minor": 4999,
        "currency": "EUR",
        "active": True,
        "available": 0,
        "reserved": 0,
        "created_at": at(created),
        "updated_at": at(created),
        "version": 1,
    }
    product.edit("Brass Lamp", None)
    product.reprice(3999, None)
    edited, repriced = log.record(product)
    assert apply_sql(projection, [edited, repriced]).updated["products"] == {
        ("LAMP-1",): {
            "name": "Brass Lamp",
            "name_key": "brass lamp",
            "updated_at": at(repriced),
            "version": 3,
            "price_minor": 3999,
            "currency": "EUR",
        }
    }
    stock.receive(12)
    stock.adjust(-2, "damaged")
    stock.reserve(ORDER, 3)
    stock.commit(ORDER)
    moved = apply_sql(projection, log.record(stock))
    assert moved.updated["products"] == {("LAMP-1",): {"available": Add(12 - 2 - 3), "reserved": Add(3 - 3)}}
    product.discontinue()
    (discontinued,) = log.record(product)
    assert apply_sql(projection, [discontinued]).updated["products"][("LAMP-1",)] == {
        "active": False,
        "updated_at": at(discontinued),
        "version": 4,
    }


def test_catalog_cache_keeps_a_product_hash_and_its_listings() -> None:
    log, projection = Log(), CatalogCache()
    product, stock = Product.create("LAMP-1", "Desk Lamp", "Brass", 4999, "EUR"), Stock.open("LAMP-1")
    (created,) = log.record(product)
    view = apply_redis(projection, [created])
    key = "product:LAMP-1"
    listed = {"sku": "LAMP-1", "name": f"desk lamp{SEPARATOR}LAMP-1", "price": f"0000000004999{SEPARATOR}LAMP-1"}
    assert {k: v for k, v in commands(view).items() if k != key} == {
        f"by:{sort}": [["ZADD", "0", member]] for sort, member in listed.items()
    }
    hashed = view.hash(key)
    assert {k: v for k, v in hashed.items() if k != "json"} == {
        "sku": "LAMP-1",
        "name": "Desk Lamp",
        "description": "Brass",
        "price_minor": "4999",
        "currency": "EUR",
        "active": "1",
        "available": "0",
        "reserved": "0",
        "version": "1",
        "created_at": at(created).isoformat(),
        "updated_at": at(created).isoformat(),
    }
    assert json.loads(hashed["json"]) == {
        "sku": "LAMP-1",
        "name": "Desk Lamp",
        "description": "Brass",
        "price_minor": 4999,
        "currency": "EUR",
        "active": True,
        "available": 0,
        "reserved": 0,
        "version": 1,
        "updated_at": at(created).isoformat(),
    }

    stock.receive(5)
    view = apply_redis(projection, log.record(stock), {key: hashed})
    assert view.hash(key)["available"] == "5" and json.loads(view.hash(key)["json"])["available"] == 5
    assert {k: v for k, v in commands(view).items() if k != key} == {
        f"by:{sort}": [["ZADD", "0", member]] for sort, member in listed.items()
    } | {f"instock:{sort}": [["ZADD", "0", member]] for sort, member in listed.items()}

    product.reprice(100, None)
    (repriced,) = log.record(product)
    view = apply_redis(projection, [repriced], {key: view.hash(key)})
    cheaper = f"0000000000100{SEPARATOR}LAMP-1"
    assert view.hash(key)["price_minor"] == "100" and view.hash(key)["version"] == "2"
    assert commands(view)["by:price"] == [["ZREM", listed["price"]], ["ZADD", "0", cheaper]]
    assert commands(view)["instock:price"] == [["ZREM", listed["price"]], ["ZADD", "0", cheaper]]
    assert commands(view)["by:name"] == [["ZADD", "0", listed["name"]]], "an unchanged member is never removed"

    stock.reserve(ORDER, 5)
    view = apply_redis(projection, log.record(stock), {key: view.hash(key)})
    assert (view.hash(key)["available"], view.hash(key)["reserved"]) == ("0", "5")
    assert {k for k, ops in commands(view).items() if ops[0][0] == "ZREM"} == {f"instock:{s}" for s in listed}

    product.discontinue()
    view = apply_redis(projection, log.record(product), {key: view.hash(key)})
    assert view.hash(key)["active"] == "0"
    assert {k: ops for k, ops in commands(view).items() if k != key} == {
        "by:sku": [["ZREM", listed["sku"]]],
        "by:name": [["ZREM", listed["name"]]],
        "by:price": [["ZREM", cheaper]],
    }


def test_catalog_cache_ignores_stock_of_a_product_it_never_saw_created() -> None:
    log, stock = Log(), Stock.open("GHOST-1")
    stock.receive(3)
    assert commands(apply_redis(CatalogCache(), log.record(stock))) == {}


def test_stock_levels_balance_every_unit_and_track_each_reservation() -> None:
    log, projection, stock = Log(), StockLevels(), Stock.open("PEN-1")
    (opened,) = log.record(stock)
    assert apply_sql(projection, [opened]).row("stock") == {
        "sku": "PEN-1",
        "available": 0,
        "reserved": 0,
        "committed": 0,
        "received": 0,
        "adjusted": 0,
        "updated_at": at(opened),
        "version": 1,
    }
    other = uuid.uuid4()
    stock.receive(10)
    stock.adjust(-1, "damaged")
    stock.reserve(ORDER, 4)
    stock.reserve(other, 2)
    stock.commit(ORDER)
    stock.release(other)
    events = log.record(stock)
    batch = apply_sql(projection, events)
    assert batch.updated["stock"] == {
        ("PEN-1",): {
            "updated_at": at(events[-1]),
            "version": 7,
            "available": Add(10 - 1 - 4 - 2 + 2),
            "received": Add(10),
            "adjusted": Add(-1),
            "reserved": Add(4 + 2 - 4 - 2),
            "committed": Add(4),
        }
    }
    committed, released = events[4], events[5]
    assert batch.inserted["reservations"] == [  # reserved, then moved on within the batch
        {"order_id": ORDER, "sku": "PEN-1", "quantity": 4, "state": "committed", "updated_at": at(committed)},
        {"order_id": other, "sku": "PEN-1", "quantity": 2, "state": "released", "updated_at": at(released)},
    ]


def test_order_history_keeps_each_order_and_every_status_it_went_through() -> None:
    log, projection = Log(), OrderHistory()
    order = Order.place(CUSTOMER, [OrderLine("PEN", 3, 250, "EUR"), OrderLine("INK", 2, 1000, "EUR")])
    lines = [
        {"sku": "PEN", "quantity": 3, "unit_price_minor": 250, "currency": "EUR"},
        {"sku": "INK", "quantity": 2, "unit_price_minor": 1000, "currency": "EUR"},
    ]
    (placed,) = log.record(order)
    first = apply_sql(projection, [placed])
    row = first.row("orders")
    assert isinstance(row["lines"], Jsonb) and row["lines"].obj == lines
    assert {k: v for k, v in row.items() if k != "lines"} == {
        "id": order.id,
        "customer_id": CUSTOMER,
        "status": "placed",
        "total_minor": 2750,
        "currency": "EUR",
        "reason": None,
        "payment_ref": None,
        "payment_due_at": None,
        "placed_at": at(placed),
        "updated_at": at(placed),
        "version": 1,
        "correlation_id": log.correlation_id,
        "deadline_event_id": None,
    }
    assert first.inserted["history"] == [
        {"order_id": order.id, "version": 1, "status": "placed", "at": at(placed), "reason": None}
    ]
    order.mark_reserved(DUE)
    order.pay(" psp-1 ")
    reserved, paid = log.record(order)
    batch = apply_sql(projection, [reserved, paid])
    assert batch.updated["orders"] == {
        (order.id,): {
            "status": "paid",
            "updated_at": at(paid),
            "version": 3,
            "payment_due_at": DUE.isoformat(),
            "deadline_event_id": reserved.event_id,
            "payment_ref": "psp-1",
        }
    }
    assert [(h["version"], h["status"]) for h in batch.inserted["history"]] == [(2, "reserved"), (3, "paid")]
    order.cancel("changed my mind", "customer")
    (cancelled,) = log.record(order)
    batch = apply_sql(projection, [cancelled])
    assert batch.updated["orders"][(order.id,)] == {
        "status": "cancelled",
        "updated_at": at(cancelled),
        "version": 4,
        "reason": "changed my mind",
    }
    assert batch.inserted["history"] == [
        {"order_id": order.id, "version": 4, "status": "cancelled", "at": at(cancelled), "reason": "changed my mind"}
    ]

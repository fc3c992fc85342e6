"""The catalog's read side: every product with its price and stock, in SQL (the searchable source
of the catalog) and in Redis (the cache the hot catalog reads come from).

Stock comes from inventory's events: a product read carries `available` and `reserved`.

The Redis view keeps each product as a hash and, for the listing, sorted sets in which every
member sorts by bytes (score 0, `ZRANGE ... BYLEX`): by SKU, by name (case-folded) and by price
(zero-padded), each once over every active product and once over those in stock. A page is one
range read from the right set, its cursor the last member; the SQL view sorts by the same keys
(`COLLATE "C"`), so both give the same pages and cursors. Each hash also keeps the product as
JSON, so a page is one script call returning one JSON array.
"""

from __future__ import annotations

from typing import Any

import msgspec

from domain.catalog import Product
from domain.inventory import Stock
from infra.eventstore.envelope import EventEnvelope
from projections.base import RedisProjection, RedisView, SqlProjection, SqlView, when
from projections.events import event_class, handled, upcast

SEPARATOR = "\x01"  # between a sort key and the SKU in a sorted-set member
PRICE_DIGITS = 13  # prices are at most 10**12 minor units
STOCK_EVENTS = handled(Stock.Received, Stock.Adjusted, Stock.Reserved, Stock.Released, Stock.Committed)
PRODUCT_EVENTS = handled(Product.Created, Product.Edited, Product.Repriced, Product.Discontinued)


def name_key(name: str) -> str:
    return name.casefold()


def price_key(price_minor: int) -> str:
    return f"{price_minor:0{PRICE_DIGITS}d}"


def stock_change(event: EventEnvelope) -> tuple[int, int]:
    """(change in available, change in reserved) of a stock event."""
    data = event.data
    match event_class(event):
        case Stock.Received:
            return int(data["quantity"]), 0
        case Stock.Adjusted:
            return int(data["delta"]), 0
        case Stock.Reserved:
            return -int(data["quantity"]), int(data["quantity"])
        case Stock.Released:
            return int(data["quantity"]), -int(data["quantity"])
        case Stock.Committed:
            return 0, -int(data["quantity"])
        case _:
            return 0, 0


def edited_fields(event: EventEnvelope) -> dict[str, str]:
    """What a `Product.Edited` (either stored shape) changes: name and/or description."""
    edited = upcast(Product.Edited, event.data)
    return {key: str(edited[key]) for key in ("name", "description") if edited.get(key) is not None}


class ProductCatalog(SqlProjection):
    name = "product_catalog"
    version = 1
    schema = "catalog_views"
    description = "products: name, description, price, active, available and reserved stock"
    handles = PRODUCT_EVENTS | STOCK_EVENTS
    tables = {
        "products": 'CREATE TABLE {products} (sku text COLLATE "C" PRIMARY KEY, name text NOT NULL,'
        ' name_key text COLLATE "C" NOT NULL, description text NOT NULL, price_minor bigint NOT NULL,'
        " currency text NOT NULL, active boolean NOT NULL, available bigint NOT NULL DEFAULT 0,"
        " reserved bigint NOT NULL DEFAULT 0, created_at timestamptz NOT NULL,"
        " updated_at timestamptz NOT NULL, version bigint NOT NULL);"
        " CREATE INDEX ON {products} (name_key, sku) WHERE active;"
        " CREATE INDEX ON {products} (price_minor, sku) WHERE active;"
        " CREATE INDEX ON {products} USING gin (name gin_trgm_ops);"
        " CREATE INDEX ON {products} USING gin (description gin_trgm_ops)",
    }
    keys = {"products": ("sku",)}

    def apply(self, event: EventEnvelope, view: SqlView) -> None:
        data = event.data
        sku = str(data["sku"])
        match event_class(event):
            case Product.Created:
                view.insert(
                    "products",
                    {
                        "sku": sku,
                        "name": data["name"],
                        "name_key": name_key(data["name"]),
                        "description": data["description"],
                        "price_minor": int(data["price_minor"]),
                        "currency": data["currency"],
                        "active": True,
                        "available": 0,
                        "reserved": 0,
                        "created_at": when(event),
                        "updated_at": when(event),
                        "version": event.version,
                    },
                )
            case Product.Edited:
                changes: dict[str, Any] = edited_fields(event)
                if "name" in changes:
                    changes["name_key"] = name_key(changes["name"])
                self._set(view, event, sku, changes)
            case Product.Repriced:
                self._set(view, event, sku, {"price_minor": int(data["price_minor"]), "currency": data["currency"]})
            case Product.Discontinued:
                self._set(view, event, sku, {"active": False})
            case _:  # stock events (and, harmlessly, any other: no change)
                available, reserved = stock_change(event)
                if available:
                    view.increment("products", (sku,), "available", available)
                if reserved:
                    view.increment("products", (sku,), "reserved", reserved)

    @staticmethod
    def _set(view: SqlView, event: EventEnvelope, sku: str, columns: dict[str, Any]) -> None:
        view.update("products", (sku,), {**columns, "updated_at": when(event), "version": event.version})


def sort_members(product: dict[str, str]) -> dict[str, str]:
    """The product's member in each sorted set, by sort."""
    sku = product["sku"]
    return {
        "sku": sku,
        "name": name_key(product["name"]) + SEPARATOR + sku,
        "price": price_key(int(product["price_minor"])) + SEPARATOR + sku,
    }


def as_json(product: dict[str, str]) -> str:
    """The product as a read returns it, kept beside its fields: a page of the listing is then one
    script call that returns one JSON array (see api/queries/catalog.py)."""
    return msgspec.json.encode(
        {
            "sku": product["sku"],
            "name": product["name"],
            "description": product["description"],
            "price_minor": int(product["price_minor"]),
            "currency": product["currency"],
            "active": product["active"] == "1",
            "available": int(product["available"]),
            "reserved": int(product["reserved"]),
            "version": int(product["version"]),
            "updated_at": product["updated_at"],
        }
    ).decode()


class CatalogCache(RedisProjection):
    name = "catalog_cache"
    version = 1
    description = (
        "product:<sku> hashes (price, stock); by:<sort> and instock:<sort> listings"
        " (sku, name, price) of active products"
    )
    handles = PRODUCT_EVENTS | STOCK_EVENTS

    def reads(self, event: EventEnvelope) -> list[str]:
        return [] if event_class(event) is Product.Created else [f"product:{event.data['sku']}"]

    def apply(self, event: EventEnvelope, view: RedisView) -> None:
        data = event.data
        key = f"product:{data['sku']}"
        kind = event_class(event)
        if kind is Product.Created:
            product = {
                "sku": str(data["sku"]),
                "name": str(data["name"]),
                "description": str(data["description"]),
                "price_minor": str(int(data["price_minor"])),
                "currency": str(data["currency"]),
                "active": "1",
                "available": "0",
                "reserved": "0",
                "version": str(event.version),
                "created_at": when(event).isoformat(),
                "updated_at": when(event).isoformat(),
            }
            view.hset(key, {**product, "json": as_json(product)})
            self._list(view, product)
            return
        before = view.hash(key)
        if not before:
            return  # stock of a product this view never saw created (never happens in order)
        after = dict(before)
        match kind:
            case Product.Edited:
                after.update(edited_fields(event))
            case Product.Repriced:
                after.update({"price_minor": str(int(data["price_minor"])), "currency": str(data["currency"])})
            case Product.Discontinued:
                after["active"] = "0"
            case _:  # stock events (and, harmlessly, any other: no change)
                available, reserved = stock_change(event)
                after["available"] = str(int(before.get("available", "0")) + available)
                after["reserved"] = str(int(before.get("reserved", "0")) + reserved)
        if event.type in PRODUCT_EVENTS:
            after.update({"version": str(event.version), "updated_at": when(event).isoformat()})
        after["json"] = as_json(after)
        view.hset(key, {k: v for k, v in after.items() if before.get(k) != v})
        self._unlist(view, before, keep=after)
        self._list(view, after)

    @staticmethod
    def _listings(product: dict[str, str]) -> dict[str, str]:
        """Sorted set -> member, for every listing the product belongs in."""
        if product.get("active") != "1":
            return {}
        members = sort_members(product)
        found = {f"by:{sort}": member for sort, member in members.items()}
        if int(product.get("available", "0")) > 0:
            found |= {f"instock:{sort}": member for sort, member in members.items()}
        return found

    def _list(self, view: RedisView, product: dict[str, str]) -> None:
        for zset, member in self._listings(product).items():
            view.zadd(zset, member, 0)

    def _unlist(self, view: RedisView, product: dict[str, str], keep: dict[str, str]) -> None:
        kept = self._listings(keep)
        for zset, member in self._listings(product).items():
            if kept.get(zset) != member:
                view.zrem(zset, member)

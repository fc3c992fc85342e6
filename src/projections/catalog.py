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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import msgspec
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from redis.commands.core import AsyncScript

from domain.catalog import Product
from domain.inventory import Stock
from infra.eventstore.envelope import EventEnvelope
from projections.base import RedisProjection, RedisView, SqlProjection, SqlView, contains, when
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
    script call that returns one JSON array (see `listing_page`)."""
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


# -- queries ------------------------------------------------------------------------------------------
# Both views answer the same filters (`CatalogFilter`) in the same order, so a cursor from one
# continues on the other. The SQL ones return rows of PRODUCT_COLUMNS, the Redis ones the products'
# JSON (as `as_json` wrote it) decoded to the caller's type: the API shapes both into its response
# type (whose module is part of the OpenAPI document: a generic `Page[T]` is named after T's module).
# `prefix` is the live version's key prefix (the API's LiveVersions knows it).

PRODUCT_COLUMNS = "sku, name, description, price_minor, currency, active, available, reserved, version, updated_at"
SQL_SORT = {"sku": "sku", "name": "name_key", "price": "price_minor"}
Rows = list[tuple[Any, ...]]


class Listed(Protocol):
    """What the filters look at in a product read from Redis."""

    @property
    def price_minor(self) -> int: ...

    @property
    def available(self) -> int: ...

    @property
    def active(self) -> bool: ...


P = TypeVar("P", bound=Listed)


class CatalogFilter(msgspec.Struct):
    """What a page of the catalog asks for, whichever view answers it."""

    sort: str  # "sku", "name" or "price", after a "-" for descending
    limit: int
    q: str | None = None
    min_price: int | None = None
    max_price: int | None = None
    in_stock: bool = False
    active: bool = True
    after: list[Any] | None = None  # the decoded cursor: [sort value, sku]

    @property
    def key(self) -> str:
        return self.sort.lstrip("-")

    @property
    def descending(self) -> bool:
        return self.sort.startswith("-")

    @property
    def redis_can_serve(self) -> bool:
        ranged = self.min_price is not None or self.max_price is not None
        return self.q is None and self.active and (self.key == "price" or not ranged)

    def keeps(self, product: Listed) -> bool:
        return (
            (self.min_price is None or product.price_minor >= self.min_price)
            and (self.max_price is None or product.price_minor <= self.max_price)
            and (not self.in_stock or product.available > 0)
            and product.active == self.active
        )


# KEYS[1]: a listing (sorted set), KEYS[2]: the view's checkpoint; ARGV: the product key prefix, the
# range (low, high), how many, and 1 for descending. Returns the checkpoint, how many members the
# range held and the products' JSON (kept in each hash), as one JSON array: [at, count, [product, ...]].
PAGE = """
local members
if ARGV[5] == '1' then
  members = redis.call('ZREVRANGEBYLEX', KEYS[1], ARGV[3], ARGV[2], 'LIMIT', 0, ARGV[4])
else
  members = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[2], ARGV[3], 'LIMIT', 0, ARGV[4])
end
local found = {}
for _, member in ipairs(members) do
  local json = redis.call('HGET', ARGV[1] .. string.match(member, '[^\1]*$'), 'json')
  if json then found[#found + 1] = json end
end
local at = redis.call('GET', KEYS[2]) or '0'
return '[' .. at .. ',' .. #members .. ',[' .. table.concat(found, ',') .. ']]'
"""


@dataclass
class Listing(Generic[P]):
    """A page of a listing as read, with what a cache of it depends on."""

    items: list[P]
    more: bool
    read: list[P]
    """Every product the range held (the filters may keep fewer): a change to any can change the page."""
    listing: str
    """The sorted set read, relative to the view."""
    position: int
    """The view's checkpoint, read in the same script."""


async def listing_page(
    scripts: Callable[[str], AsyncScript], prefix: str, f: CatalogFilter, product: type[P]
) -> Listing[P]:
    """A page of the listing and whether another follows: one lexicographic range of the right sorted
    set and the products in it, in one script call. `scripts` registers a Lua source once per
    process (`Runtime.script`)."""
    listing = f"{'instock' if f.in_stock else 'by'}:{f.key}"
    low, high = "-", "+"
    if f.key == "price":
        if f.min_price is not None:
            low = "[" + price_key(f.min_price)
        if f.max_price is not None:
            high = "(" + price_key(f.max_price + 1)
    if f.after is not None:
        value, sku = f.after
        member = sku if f.key == "sku" else f"{price_key(value) if f.key == 'price' else value}{SEPARATOR}{sku}"
        # The cursor narrows the range, never widens it (a client may change filters between pages).
        if f.descending:
            high = "(" + member if high == "+" else "(" + min(high[1:], member)
        else:
            low = "(" + member if low == "-" or member >= low[1:] else low
    raw = await scripts(PAGE)(
        keys=[prefix + listing, prefix + "checkpoint"],
        args=[f"{prefix}product:", low, high, f.limit + 1, int(f.descending)],
    )
    page: Any = tuple[int, int, list[product]]  # type: ignore[valid-type]  # the caller's type, for msgspec at run time
    at, ranged, found = msgspec.json.decode(raw, type=page)
    products = [p for p in found if f.keeps(p)]
    return Listing(products[: f.limit], ranged > f.limit, found, listing, at)


async def product_rows(views: AsyncConnectionPool[AsyncConnection[Any]], f: CatalogFilter) -> tuple[Rows, bool]:
    """PRODUCT_COLUMNS of a page of the catalog, and whether another page follows."""
    where = ["active" if f.active else "NOT active"]
    params: dict[str, Any] = {"limit": f.limit + 1}
    if f.q:
        where.append("(name ILIKE %(q)s OR description ILIKE %(q)s)")
        params["q"] = contains(f.q)
    if f.min_price is not None:
        where.append("price_minor >= %(min)s")
        params["min"] = f.min_price
    if f.max_price is not None:
        where.append("price_minor <= %(max)s")
        params["max"] = f.max_price
    if f.in_stock:
        where.append("available > 0")
    column = SQL_SORT[f.key]
    if f.after is not None:
        where.append(f"({column}, sku) {'<' if f.descending else '>'} (%(value)s, %(sku)s)")
        params |= {"value": f.after[0], "sku": str(f.after[1])}
    direction = "DESC" if f.descending else "ASC"
    async with views.connection() as conn:
        rows: Rows = await (
            await conn.execute(
                f"SELECT {PRODUCT_COLUMNS} FROM catalog_views.products WHERE {' AND '.join(where)}"
                f" ORDER BY {column} {direction}, sku {direction} LIMIT %(limit)s",
                params,
            )
        ).fetchall()
    return rows[: f.limit], len(rows) > f.limit


async def product_row(views: AsyncConnectionPool[AsyncConnection[Any]], sku: str) -> tuple[Any, ...] | None:
    """The product's PRODUCT_COLUMNS, or None."""
    async with views.connection() as conn:
        row: tuple[Any, ...] | None = await (
            await conn.execute(f"SELECT {PRODUCT_COLUMNS} FROM catalog_views.products WHERE sku = %s", (sku,))
        ).fetchone()
    return row

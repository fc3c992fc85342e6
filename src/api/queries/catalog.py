"""Query routes of the catalog: the hot path. Lists and single products come from the Redis view
(`catalog_cache`); a text search, a price range under another sort, discontinued products, or a
Redis that does not answer go to the SQL view (`product_catalog`) behind it. Both sort by the same
keys, so a cursor from one continues on the other."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import msgspec
import redis.exceptions
from litestar import Controller, Request, Response, get
from litestar.params import Parameter

from api.commands.common import problems
from api.queries.common import (
    Cursor,
    Limit,
    MinPosition,
    Page,
    contains,
    decode_cursor,
    encode_cursor,
    etag,
    wait_for_position,
)
from api.runtime import RUNTIME, Runtime
from domain.catalog import MAX_PRICE, clean_sku
from domain.errors import Invalid, NotFound
from projections.catalog import SEPARATOR, CatalogCache, ProductCatalog, name_key, price_key

PriceParam = Annotated[int | None, Parameter(ge=0, le=MAX_PRICE, description="in minor units, inclusive")]
_COLUMNS = "sku, name, description, price_minor, currency, active, available, reserved, version, updated_at"
_SQL_SORT = {"sku": "sku", "name": "name_key", "price": "price_minor"}


class ProductView(msgspec.Struct):
    sku: str
    name: str
    description: str
    price_minor: int
    currency: str
    active: bool
    available: int
    reserved: int
    version: int
    updated_at: datetime


class ProductSort(StrEnum):
    SKU = "sku"
    SKU_DESC = "-sku"
    NAME = "name"
    NAME_DESC = "-name"
    PRICE = "price"
    PRICE_DESC = "-price"


# KEYS[1]: a listing (sorted set); ARGV: the product key prefix, the range (low, high), how many,
# and 1 for descending. Returns how many members the range held and the products' JSON (kept in
# each hash), as one JSON array: [count, [product, ...]].
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
return '[' .. #members .. ',[' .. table.concat(found, ',') .. ']]'
"""


def sort_value(product: ProductView, sort: str) -> Any:
    return {"sku": product.sku, "name": name_key(product.name), "price": product.price_minor}[sort]


class CatalogFilter(msgspec.Struct):
    sort: ProductSort
    limit: int
    q: str | None = None
    min_price: int | None = None
    max_price: int | None = None
    in_stock: bool = False
    active: bool = True
    after: list[Any] | None = None  # the decoded cursor: [sort value, sku]

    @property
    def key(self) -> str:
        return self.sort.value.lstrip("-")

    @property
    def descending(self) -> bool:
        return self.sort.value.startswith("-")

    @property
    def redis_can_serve(self) -> bool:
        ranged = self.min_price is not None or self.max_price is not None
        return self.q is None and self.active and (self.key == "price" or not ranged)

    def keeps(self, product: ProductView) -> bool:
        return (
            (self.min_price is None or product.price_minor >= self.min_price)
            and (self.max_price is None or product.price_minor <= self.max_price)
            and (not self.in_stock or product.available > 0)
            and product.active == self.active
        )


async def redis_page(runtime: Runtime, f: CatalogFilter) -> tuple[list[ProductView], bool]:
    """One lexicographic range of the right sorted set and the products in it: one script call."""
    prefix = await runtime.live_versions.prefix(CatalogCache.name)
    zset = f"{prefix}{'instock' if f.in_stock else 'by'}:{f.key}"
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
    raw = await runtime.script(PAGE)(keys=[zset], args=[f"{prefix}product:", low, high, f.limit + 1, int(f.descending)])
    ranged, found = msgspec.json.decode(raw, type=tuple[int, list[ProductView]])
    products = [p for p in found if f.keeps(p)]
    return products[: f.limit], ranged > f.limit


async def sql_page(runtime: Runtime, f: CatalogFilter) -> tuple[list[ProductView], bool]:
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
    column = _SQL_SORT[f.key]
    if f.after is not None:
        where.append(f"({column}, sku) {'<' if f.descending else '>'} (%(value)s, %(sku)s)")
        params |= {"value": f.after[0], "sku": str(f.after[1])}
    direction = "DESC" if f.descending else "ASC"
    async with runtime.views.connection() as conn:
        rows = await (
            await conn.execute(
                f"SELECT {_COLUMNS} FROM catalog_views.products WHERE {' AND '.join(where)}"
                f" ORDER BY {column} {direction}, sku {direction} LIMIT %(limit)s",
                params,
            )
        ).fetchall()
    return [ProductView(*row) for row in rows[: f.limit]], len(rows) > f.limit


class CatalogQueries(Controller):
    path = "/v1/products"
    tags = ["queries"]
    dependencies = RUNTIME

    @get(
        operation_id="ListProducts",
        summary="The catalog: search, filter, sort, a page at a time",
        responses=problems(401, 422, 503),
    )
    async def list_products(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        q: Annotated[
            str | None, Parameter(min_length=1, max_length=200, description="text in the name or description")
        ] = None,
        min_price: PriceParam = None,
        max_price: PriceParam = None,
        in_stock: Annotated[bool, Parameter(description="only products with stock available")] = False,
        active: Annotated[bool, Parameter(description="false lists discontinued products")] = True,
        sort: ProductSort = ProductSort.NAME,
        limit: Limit = 50,
        cursor: Cursor = None,
        min_position: MinPosition = None,
    ) -> Page[ProductView]:
        if min_price is not None and max_price is not None and min_price > max_price:
            raise Invalid("min_price must not exceed max_price", field="min_price")
        shape = tuple[int, str] if sort.value.lstrip("-") == "price" else tuple[str, str]
        f = CatalogFilter(
            sort,
            limit,
            q,
            min_price,
            max_price,
            in_stock,
            active,
            list(decode_cursor(cursor, shape)) if cursor else None,
        )
        items, more = None, False
        if f.redis_can_serve:
            try:
                await wait_for_position(runtime, request, min_position, [CatalogCache.name])
                items, more = await redis_page(runtime, f)
            except redis.exceptions.RedisError:
                items = None  # the SQL view answers instead
        if items is None:
            await wait_for_position(runtime, request, min_position, [ProductCatalog.name])
            items, more = await sql_page(runtime, f)
        next_cursor = encode_cursor([sort_value(items[-1], f.key), items[-1].sku]) if more and items else None
        return Page(items, next_cursor)

    @get(
        "/{sku:str}",
        operation_id="GetProduct",
        summary="A product, with its available and reserved stock",
        responses=problems(401, 404, 503),
    )
    async def get_product(
        self, request: Request[Any, Any, Any], runtime: Runtime, sku: str, min_position: MinPosition = None
    ) -> Response[ProductView]:
        try:
            sku = clean_sku(sku)
        except Invalid:
            raise NotFound(f"product {sku} not found") from None
        product = None
        try:
            await wait_for_position(runtime, request, min_position, [CatalogCache.name])
            raw = await runtime.redis.hget(
                f"{await runtime.live_versions.prefix(CatalogCache.name)}product:{sku}", "json"
            )
            product = msgspec.json.decode(raw, type=ProductView) if raw else None
        except redis.exceptions.RedisError:
            await wait_for_position(runtime, request, min_position, [ProductCatalog.name])
            async with runtime.views.connection() as conn:
                row = await (
                    await conn.execute(f"SELECT {_COLUMNS} FROM catalog_views.products WHERE sku = %s", (sku,))
                ).fetchone()
            product = ProductView(*row) if row else None
        if product is None:
            raise NotFound(f"product {sku} not found")
        return Response(product, headers=etag(product.version))

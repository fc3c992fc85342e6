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

from api.contract import ETAG, query
from api.queries import cached
from api.queries.common import (
    Cursor,
    Limit,
    MinPosition,
    decode_cursor,
    encode_cursor,
    etag,
    position_of,
    wait_for_position,
)
from api.runtime import RUNTIME, Runtime
from domain.catalog import MAX_PRICE, clean_sku
from domain.errors import Invalid, NotFound
from projections.catalog import (
    CatalogCache,
    CatalogFilter,
    ProductCatalog,
    name_key,
    product_row,
    product_rows,
)

PriceParam = Annotated[int | None, Parameter(ge=0, le=MAX_PRICE, description="in minor units, inclusive")]


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


class ProductPage(msgspec.Struct):
    items: list[ProductView]
    next_cursor: str | None = None


class ProductSort(StrEnum):
    SKU = "sku"
    SKU_DESC = "-sku"
    NAME = "name"
    NAME_DESC = "-name"
    PRICE = "price"
    PRICE_DESC = "-price"


_PRODUCT = msgspec.json.Decoder(ProductView)


def sort_value(product: ProductView, sort: str) -> Any:
    return {"sku": product.sku, "name": name_key(product.name), "price": product.price_minor}[sort]


class CatalogQueries(Controller):
    path = "/v1/products"
    tags = ["queries"]
    dependencies = RUNTIME

    @get(
        operation_id="ListProducts",
        summary="The catalog: search, filter, sort, a page at a time",
        responses=query(),
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
    ) -> ProductPage:
        if min_price is not None and max_price is not None and min_price > max_price:
            raise Invalid("min_price must not exceed max_price", field="min_price")
        shape = tuple[int, str] if sort.value.lstrip("-") == "price" else tuple[str, str]
        f = CatalogFilter(
            sort.value,
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
                page = await cached.cached_page(runtime, f, position_of(min_position))
                if page is None:
                    await wait_for_position(runtime, request, min_position, [CatalogCache.name])
                    page = await cached.read_page(runtime, f, ProductView)
                items, more = page
            except redis.exceptions.RedisError:
                items = None  # the SQL view answers instead
        if items is None:
            await wait_for_position(runtime, request, min_position, [ProductCatalog.name])
            rows, more = await product_rows(runtime.views, f)
            items = [ProductView(*row) for row in rows]
        next_cursor = encode_cursor([sort_value(items[-1], f.key), items[-1].sku]) if more and items else None
        return ProductPage(items, next_cursor)

    @get(
        "/{sku:str}",
        operation_id="GetProduct",
        summary="A product, with its available and reserved stock",
        responses=query(404),
        response_headers=[ETAG],
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
            raw = await cached.cached_product(runtime, sku, position_of(min_position))
            if raw is None:
                await wait_for_position(runtime, request, min_position, [CatalogCache.name])
                raw = await cached.read_product(runtime, sku)
            product = _PRODUCT.decode(raw) if raw else None
        except redis.exceptions.RedisError:
            await wait_for_position(runtime, request, min_position, [ProductCatalog.name])
            row = await product_row(runtime.views, sku)
            product = ProductView(*row) if row else None
        if product is None:
            raise NotFound(f"product {sku} not found")
        return Response(product, headers=etag(product.version))

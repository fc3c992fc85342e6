"""The write side of catalog and inventory: products (managers and admins) and stock per SKU."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from commands.base import (
    Actor,
    ChronicleApplication,
    CommandResult,
    ConcurrentUpdate,
    Context,
    FactoryMaker,
    KeyRecorded,
    check_version,
    command,
)
from domain import access
from domain.catalog import Product, clean_sku, product_id
from domain.errors import Conflict, Forbidden, NotFound
from domain.inventory import Stock, stock_id


def _staff(ctx: Context) -> Actor:
    if ctx.actor is None or not access.may_change_catalog(ctx.actor):
        raise Forbidden("only managers and admins may change the catalog or the stock")
    return ctx.actor


class CatalogApplication(ChronicleApplication):
    name = "catalog"
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {Product: 100}

    @command
    def create_product(
        self, ctx: Context, sku: str, name: str, description: str | None, price_minor: int, currency: str
    ) -> CommandResult:
        _staff(ctx)
        product = Product.create(sku, name, description, price_minor, currency)
        try:
            return self.record(ctx, product, result_of=product)
        except ConcurrentUpdate:
            if ctx.idempotency is not None and self.key_recorded(ctx.idempotency):
                raise
            raise Conflict(f"a product with SKU {product.sku} exists already", field="sku") from None

    @command
    def edit_product(
        self, ctx: Context, sku: str, name: str | None, description: str | None, expected_version: int | None = None
    ) -> CommandResult:
        product = self._for_update(ctx, sku, expected_version)
        product.edit(name, description)
        return self.record(ctx, product, result_of=product)

    @command
    def reprice(
        self, ctx: Context, sku: str, price_minor: int, currency: str | None, expected_version: int | None = None
    ) -> CommandResult:
        product = self._for_update(ctx, sku, expected_version)
        product.reprice(price_minor, currency)
        return self.record(ctx, product, result_of=product)

    @command
    def discontinue(self, ctx: Context, sku: str, expected_version: int | None = None) -> CommandResult:
        product = self._for_update(ctx, sku, expected_version)
        product.discontinue()
        return self.record(ctx, product, result_of=product)

    def _for_update(self, ctx: Context, sku: str, expected_version: int | None) -> Product:
        _staff(ctx)
        product = self.load(Product, product_id(sku), f"product {clean_sku(sku)}")
        check_version(product, expected_version)
        return product


class InventoryApplication(ChronicleApplication):
    """A hot SKU's stock takes an event per reservation, release and commit: it is loaded from a
    snapshot (every 100 versions) and the events after it."""

    name = "inventory"
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {Stock: 100}

    def __init__(
        self,
        make_factory: FactoryMaker,
        *,
        product_exists: Callable[[str], bool],
        key_recorded: KeyRecorded | None = None,
    ) -> None:
        super().__init__(make_factory, key_recorded=key_recorded)
        self.product_exists = product_exists

    def stock(self, sku: str) -> Stock:
        """The SKU's stock, opened (in memory, saved with its first change) if it has none yet."""
        try:
            return self.load(Stock, stock_id(sku), f"stock of {clean_sku(sku)}")
        except NotFound:
            return Stock.open(sku)

    @command
    def receive(self, ctx: Context, sku: str, quantity: int) -> CommandResult:
        stock = self._for_update(ctx, sku)
        stock.receive(quantity)
        return self.record(ctx, stock, result_of=stock)

    @command
    def adjust(self, ctx: Context, sku: str, delta: int, reason: str) -> CommandResult:
        stock = self._for_update(ctx, sku)
        stock.adjust(delta, reason)
        return self.record(ctx, stock, result_of=stock)

    def _for_update(self, ctx: Context, sku: str) -> Stock:
        _staff(ctx)
        if not self.product_exists(sku):
            raise NotFound(f"product {clean_sku(sku)} not found")
        return self.stock(sku)


def product_exists(catalog: CatalogApplication) -> Callable[[str], bool]:
    return lambda sku: catalog.exists(Product, product_id(sku))

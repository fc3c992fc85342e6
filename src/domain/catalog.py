"""Catalog: products, one per SKU. A product's stream id is derived from its SKU, so a second
product with the same SKU collides with the first on its first version. Every event names its SKU,
so readers need no mapping from stream ids back to SKUs."""

from __future__ import annotations

import re
import uuid
from typing import Any

from eventsourcing.domain import Aggregate, event

from domain.errors import Conflict, Invalid
from domain.identity import clean_name
from domain.work import clean_description

SKU_NAMESPACE = uuid.UUID("5a1e2b3c-4d5e-4f60-8a71-92b3c4d5e6f7")
_SKU = re.compile(r"^[A-Z0-9][A-Z0-9_-]{0,31}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
MAX_PRICE = 10**12


def clean_sku(sku: str) -> str:
    cleaned = sku.strip().upper()
    if not _SKU.match(cleaned):
        raise Invalid("sku must be 1-32 letters, digits, '-' or '_'", field="sku")
    return cleaned


def product_id(sku: str) -> uuid.UUID:
    return uuid.uuid5(SKU_NAMESPACE, clean_sku(sku))


def clean_price(price_minor: int, currency: str) -> tuple[int, str]:
    if not 0 <= price_minor <= MAX_PRICE:
        raise Invalid("price_minor must be a whole number of minor units, 0 or more", field="price_minor")
    if not _CURRENCY.match(currency):
        raise Invalid("currency must be a three-letter ISO 4217 code, e.g. EUR", field="currency")
    return price_minor, currency


class Product(Aggregate):
    @staticmethod
    def create_id(sku: str, **_: Any) -> uuid.UUID:
        return product_id(sku)

    class Created(Aggregate.Created):
        sku: str
        name: str
        description: str
        price_minor: int
        currency: str

    @event(Created)
    def __init__(self, sku: str, name: str, description: str, price_minor: int, currency: str) -> None:
        self.sku = sku
        self.name = name
        self.description = description
        self.price_minor = price_minor
        self.currency = currency
        self.active = True

    @classmethod
    def create(cls, sku: str, name: str, description: str | None, price_minor: int, currency: str) -> Product:
        price, money = clean_price(price_minor, currency)
        return cls(clean_sku(sku), clean_name(name), clean_description(description), price, money)

    def check_active(self) -> None:
        if not self.active:
            raise Conflict(f"product {self.sku} is discontinued")

    def edit(self, name: str | None, description: str | None) -> None:
        self.check_active()
        name = None if name is None else clean_name(name)
        description = None if description is None else clean_description(description)
        name = None if name == self.name else name
        description = None if description == self.description else description
        if name is not None or description is not None:
            self._edited(sku=self.sku, name=name, description=description)

    class Edited(Aggregate.Event):
        """The fields that changed; `None` did not change.

        Version 1 carried them in one `changes` dict; `upcast_v1_v2` reads it into this shape (it
        only moves keys, so it serves projections reading the plain JSON too)."""

        sku: str
        name: str | None = None
        description: str | None = None

        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            changes = state.pop("changes")
            state["name"] = changes.get("name")
            state["description"] = changes.get("description")

    @event(Edited)
    def _edited(self, sku: str, name: str | None = None, description: str | None = None) -> None:
        if name is not None:
            self.name = name
        if description is not None:
            self.description = description

    def reprice(self, price_minor: int, currency: str | None) -> None:
        self.check_active()
        price, money = clean_price(price_minor, currency or self.currency)
        if (price, money) != (self.price_minor, self.currency):
            self._repriced(sku=self.sku, price_minor=price, currency=money)

    class Repriced(Aggregate.Event):
        sku: str
        price_minor: int
        currency: str

    @event(Repriced)
    def _repriced(self, sku: str, price_minor: int, currency: str) -> None:
        self.price_minor = price_minor
        self.currency = currency

    def discontinue(self) -> None:
        self.check_active()
        self._discontinued(sku=self.sku)

    class Discontinued(Aggregate.Event):
        sku: str

    @event(Discontinued)
    def _discontinued(self, sku: str) -> None:
        self.active = False

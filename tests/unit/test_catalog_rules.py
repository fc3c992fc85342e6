"""The rules of the catalog: given a product, when a command, then events or an error."""

from __future__ import annotations

import pytest

from domain.catalog import MAX_PRICE, Product, product_id
from domain.errors import Conflict, Invalid
from tests.unit.specs import given, raises


def lamp(*, discontinued: bool = False) -> Product:
    p = Product.create("LAMP-1", "Desk lamp", "Brass", 4999, "EUR")
    if discontinued:
        p.discontinue()
    return p


def test_creating_a_product_cleans_its_fields_and_keys_it_by_sku() -> None:
    p = Product.create("  lamp-1 ", "  Desk   lamp ", "  Brass  ", 4999, "EUR")
    assert (p.sku, p.name, p.description, p.price_minor, p.currency, p.active) == (
        "LAMP-1",
        "Desk lamp",
        "Brass",
        4999,
        "EUR",
        True,
    )
    assert p.id == product_id("LAMP-1") == product_id(" lamp-1")
    assert Product.create("A", "a", None, 0, "EUR").description == ""


@pytest.mark.parametrize(
    ("sku", "price", "currency", "field"),
    [
        ("has space", 1, "EUR", "sku"),
        ("", 1, "EUR", "sku"),
        ("X" * 33, 1, "EUR", "sku"),
        ("-LEADING", 1, "EUR", "sku"),
        ("A", -1, "EUR", "price_minor"),
        ("A", MAX_PRICE + 1, "EUR", "price_minor"),
        ("A", 1, "euro", "currency"),
        ("A", 1, "eur", "currency"),
    ],
)
def test_a_product_with_a_bad_sku_price_or_currency_is_refused(sku: str, price: int, currency: str, field: str) -> None:
    with raises(Invalid) as refused:
        Product.create(sku, "Name", None, price, currency)
    assert refused.value.field == field


def test_the_highest_price_and_a_free_product_are_allowed() -> None:
    assert Product.create("A", "a", None, MAX_PRICE, "EUR").price_minor == MAX_PRICE
    assert Product.create("B", "b", None, 0, "EUR").price_minor == 0


def test_editing() -> None:
    given(lamp()).when(lambda p: p.edit("Brass lamp", None)).then("Edited", sku="LAMP-1").state(
        name="Brass lamp", description="Brass"
    )
    given(lamp()).when(lambda p: p.edit(None, " Polished brass ")).then("Edited").state(
        name="Desk lamp", description="Polished brass"
    )
    given(lamp()).when(lambda p: p.edit("Desk lamp", "Brass")).then_nothing()
    given(lamp()).when(lambda p: p.edit(None, None)).then_nothing()
    given(lamp()).when(lambda p: p.edit("  ", None)).rejected(Invalid, field="name")
    given(lamp()).when(lambda p: p.edit(None, "bell\x07")).rejected(Invalid, field="description")
    given(lamp(discontinued=True)).when(lambda p: p.edit("New", None)).rejected(Conflict, "discontinued")


def test_repricing() -> None:
    given(lamp()).when(lambda p: p.reprice(3999, None)).then(
        "Repriced", sku="LAMP-1", price_minor=3999, currency="EUR"
    ).state(price_minor=3999, currency="EUR")
    given(lamp()).when(lambda p: p.reprice(4999, "USD")).then("Repriced", price_minor=4999, currency="USD")
    given(lamp()).when(lambda p: p.reprice(4999, "EUR")).then_nothing()
    given(lamp()).when(lambda p: p.reprice(4999, None)).then_nothing()
    given(lamp()).when(lambda p: p.reprice(-5, None)).rejected(Invalid, field="price_minor")
    given(lamp()).when(lambda p: p.reprice(5, "dollars")).rejected(Invalid, field="currency")
    given(lamp(discontinued=True)).when(lambda p: p.reprice(1, None)).rejected(Conflict, "discontinued")


def test_discontinuing() -> None:
    given(lamp()).when(lambda p: p.discontinue()).then("Discontinued", sku="LAMP-1").state(active=False)
    given(lamp(discontinued=True)).when(lambda p: p.discontinue()).rejected(Conflict, "LAMP-1 is discontinued")

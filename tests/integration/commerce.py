"""Helpers for the catalog, inventory and ordering tests over HTTP."""

from __future__ import annotations

import uuid
from typing import Any

from tests.integration.http import Api, User
from tests.waiting import eventually

DECIDED = {"reserved", "rejected", "cancelled", "paid", "shipped", "delivered"}


def new_sku(prefix: str = "SKU") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10].upper()}"


def product(
    api: Api,
    manager: User,
    *,
    stock: int = 0,
    price: int = 1250,
    currency: str = "EUR",
    name: str | None = None,
    sku: str | None = None,
) -> tuple[str, str | None]:
    """A new product with `stock` units received; returns its SKU and the last command's position."""
    sku = sku or new_sku()
    r = api.post(
        "/v1/products",
        {"sku": sku, "name": name or f"Product {sku}", "price_minor": price, "currency": currency},
        manager,
    )
    assert r.status_code == 201, r.text
    position = r.json()["position"]
    if stock:
        r = api.post(f"/v1/inventory/{sku}/receive", {"quantity": stock}, manager)
        assert r.status_code == 200, r.text
        position = r.json()["position"]
    return sku, position


def place(api: Api, customer: User, *lines: tuple[str, int]) -> str:
    r = api.post("/v1/orders", {"lines": [{"sku": sku, "quantity": q} for sku, q in lines]}, customer)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def wait_order(
    api: Api, user: User, order_id: str, statuses: set[str] = DECIDED, timeout: float = 30.0
) -> dict[str, Any]:
    """The order once its status is one of `statuses` (the saga and the order view are asynchronous)."""

    def decided() -> dict[str, Any]:
        r = api.get(f"/v1/orders/{order_id}", user)
        assert r.status_code == 200 and r.json()["status"] in statuses, f"{r.status_code} {r.text}"
        return dict(r.json())

    return eventually(decided, what=f"order {order_id} to be {' or '.join(sorted(statuses))}", timeout=timeout)


def stock_of(api: Api, user: User, sku: str, position: str | None = None) -> dict[str, Any]:
    headers = {"x_min_position": position} if position else {}
    r = api.get(f"/v1/products/{sku}", user, **headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def assert_stock(api: Api, user: User, sku: str, **expected: int) -> dict[str, Any]:
    """The product as read now, if its stock fields are as `expected` (for `eventually`: the catalog
    views apply stock events apart from the order view)."""
    got = stock_of(api, user, sku)
    assert {field: got[field] for field in expected} == expected, got
    return got

"""Command routes of catalog, inventory and ordering. Managers and admins change the catalog and
the stock; members place, pay and cancel their own orders; managers and admins ship and deliver."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, post

from api.commands.common import (
    CommandAccepted,
    Description,
    IfMatch,
    Key,
    Name,
    expected_version,
    run_command,
)
from api.contract import COMMAND_HEADERS, command, example, links
from api.runtime import RUNTIME, Runtime
from domain.catalog import MAX_PRICE
from domain.errors import Invalid
from domain.ordering import MAX_LINES, MAX_QUANTITY

Sku = Annotated[str, msgspec.Meta(min_length=1, max_length=32, description="letters, digits, '-' or '_'")]
Price = Annotated[int, msgspec.Meta(ge=0, le=MAX_PRICE, description="in minor units (cents)")]
Currency = Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$", description="ISO 4217, e.g. EUR")]
Quantity = Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)]
Delta = Annotated[int, msgspec.Meta(ge=-1_000_000_000, le=1_000_000_000, description="not 0")]
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class CreateProductBody(msgspec.Struct, forbid_unknown_fields=True):
    sku: Sku
    name: Name
    price_minor: Price
    currency: Currency
    description: Description | None = None


class EditProductBody(msgspec.Struct, forbid_unknown_fields=True):
    name: Name | None = None
    description: Description | None = None


class RepriceBody(msgspec.Struct, forbid_unknown_fields=True):
    price_minor: Price
    currency: Currency | None = None


class ReceiveBody(msgspec.Struct, forbid_unknown_fields=True):
    quantity: Quantity


class AdjustBody(msgspec.Struct, forbid_unknown_fields=True):
    delta: Delta
    reason: Reason


class OrderLineBody(msgspec.Struct, forbid_unknown_fields=True):
    sku: Sku
    quantity: Annotated[int, msgspec.Meta(ge=1, le=MAX_QUANTITY)]


class PlaceOrderBody(msgspec.Struct, forbid_unknown_fields=True):
    lines: Annotated[list[OrderLineBody], msgspec.Meta(min_length=1, max_length=MAX_LINES)]


class PayBody(msgspec.Struct, forbid_unknown_fields=True):
    payment_ref: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class ProductCommands(Controller):
    path = "/v1/products"
    tags = ["commands"]
    dependencies = RUNTIME

    @post(
        operation_id="CreateProduct",
        summary="Add a product to the catalog (managers, admins)",
        status_code=201,
        responses=command(403, 409),
        response_headers=COMMAND_HEADERS,
    )
    async def create(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        data: Annotated[
            CreateProductBody,
            example(
                {
                    "sku": "MUG-1",
                    "name": "Chronicle mug",
                    "price_minor": 1250,
                    "currency": "EUR",
                    "description": "Holds 330 ml",
                }
            ),
        ],
        idempotency_key: Key = None,
    ) -> Response[CommandAccepted]:
        return await run_command(
            request,
            runtime,
            "products.create",
            runtime.chronicle.catalog.create_product,
            data.sku,
            data.name,
            data.description,
            data.price_minor,
            data.currency,
            status=201,
            idempotency_key=idempotency_key,
        )

    @post(
        "/{sku:str}/edit",
        operation_id="EditProduct",
        summary="Change a product's name or description",
        status_code=200,
        responses=command(403, 404, 409, 412),
        response_headers=COMMAND_HEADERS,
    )
    async def edit(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        sku: str,
        data: Annotated[EditProductBody, example({"name": "Chronicle mug, large"})],
        if_match: IfMatch = None,
        idempotency_key: Key = None,
    ) -> Response[CommandAccepted]:
        if data.name is None and data.description is None:
            raise Invalid("send at least one of name, description", field="body")
        return await run_command(
            request,
            runtime,
            "products.edit",
            runtime.chronicle.catalog.edit_product,
            sku,
            data.name,
            data.description,
            expected_version(if_match),
            idempotency_key=idempotency_key,
        )

    @post(
        "/{sku:str}/reprice",
        operation_id="RepriceProduct",
        summary="Change a product's price",
        status_code=200,
        responses=command(403, 404, 409, 412),
        response_headers=COMMAND_HEADERS,
    )
    async def reprice(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        sku: str,
        data: Annotated[RepriceBody, example({"price_minor": 1400, "currency": "EUR"})],
        if_match: IfMatch = None,
        idempotency_key: Key = None,
    ) -> Response[CommandAccepted]:
        return await run_command(
            request,
            runtime,
            "products.reprice",
            runtime.chronicle.catalog.reprice,
            sku,
            data.price_minor,
            data.currency,
            expected_version(if_match),
            idempotency_key=idempotency_key,
        )

    @post(
        "/{sku:str}/discontinue",
        operation_id="DiscontinueProduct",
        summary="Take a product off the catalog; orders can no longer be placed for it",
        status_code=200,
        responses=command(403, 404, 409, 412),
        response_headers=COMMAND_HEADERS,
    )
    async def discontinue(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        sku: str,
        if_match: IfMatch = None,
        idempotency_key: Key = None,
    ) -> Response[CommandAccepted]:
        return await run_command(
            request,
            runtime,
            "products.discontinue",
            runtime.chronicle.catalog.discontinue,
            sku,
            expected_version(if_match),
            idempotency_key=idempotency_key,
        )


class InventoryCommands(Controller):
    path = "/v1/inventory/{sku:str}"
    tags = ["commands"]
    dependencies = RUNTIME

    @post(
        "/receive",
        operation_id="ReceiveStock",
        summary="Add received units to a SKU's stock (managers, admins)",
        status_code=200,
        responses=command(403, 404, 409),
        response_headers=COMMAND_HEADERS,
    )
    async def receive(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        sku: str,
        data: Annotated[ReceiveBody, example({"quantity": 3})],
        idempotency_key: Key = None,
    ) -> Response[CommandAccepted]:
        return await run_command(
            request,
            runtime,
            "inventory.receive",
            runtime.chronicle.inventory.receive,
            sku,
            data.quantity,
            idempotency_key=idempotency_key,
        )

    @post(
        "/adjust",
        operation_id="AdjustStock",
        summary="Correct a SKU's available stock, with a reason (never below zero)",
        status_code=200,
        responses=command(403, 404, 409),
        response_headers=COMMAND_HEADERS,
    )
    async def adjust(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        sku: str,
        data: Annotated[AdjustBody, example({"delta": -2, "reason": "two mugs broke in the warehouse"})],
        idempotency_key: Key = None,
    ) -> Response[CommandAccepted]:
        return await run_command(
            request,
            runtime,
            "inventory.adjust",
            runtime.chronicle.inventory.adjust,
            sku,
            data.delta,
            data.reason,
            idempotency_key=idempotency_key,
        )


class OrderCommands(Controller):
    path = "/v1/orders"
    tags = ["commands"]
    dependencies = RUNTIME

    @post(
        operation_id="PlaceOrder",
        opt=links(
            GetOrder={"order_id": "$response.body#/id"},
            PayOrder={"order_id": "$response.body#/id"},
            CancelOrder={"order_id": "$response.body#/id"},
        ),
        summary="Place an order at today's prices; the saga then reserves its stock or rejects it",
        status_code=201,
        responses=command(404, 409),
        response_headers=COMMAND_HEADERS,
    )
    async def place(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        data: Annotated[PlaceOrderBody, example({"lines": [{"sku": "MUG-1", "quantity": 2}]})],
        idempotency_key: Key = None,
    ) -> Response[CommandAccepted]:
        lines = [{"sku": line.sku, "quantity": line.quantity} for line in data.lines]
        return await run_command(
            request,
            runtime,
            "orders.place",
            runtime.chronicle.ordering.place_order,
            lines,
            status=201,
            idempotency_key=idempotency_key,
        )

    @post(
        "/{order_id:uuid}/pay",
        operation_id="PayOrder",
        summary="Record the payment of a reserved order",
        status_code=200,
        responses=command(403, 404, 409, 412),
        response_headers=COMMAND_HEADERS,
    )
    async def pay(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        order_id: uuid.UUID,
        data: Annotated[PayBody, example({"payment_ref": "psp-7f3a91"})],
        if_match: IfMatch = None,
        idempotency_key: Key = None,
    ) -> Response[CommandAccepted]:
        return await run_command(
            request,
            runtime,
            "orders.pay",
            runtime.chronicle.ordering.pay,
            order_id,
            data.payment_ref,
            expected_version(if_match),
            idempotency_key=idempotency_key,
        )

    @post(
        "/{order_id:uuid}/ship",
        operation_id="ShipOrder",
        summary="Ship a paid order (managers, admins)",
        status_code=200,
        responses=command(403, 404, 409, 412),
        response_headers=COMMAND_HEADERS,
    )
    async def ship(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        order_id: uuid.UUID,
        if_match: IfMatch = None,
        idempotency_key: Key = None,
    ) -> Response[CommandAccepted]:
        return await run_command(
            request,
            runtime,
            "orders.ship",
            runtime.chronicle.ordering.ship,
            order_id,
            expected_version(if_match),
            idempotency_key=idempotency_key,
        )

    @post(
        "/{order_id:uuid}/deliver",
        operation_id="DeliverOrder",
        summary="Mark a shipped order delivered (managers, admins)",
        status_code=200,
        responses=command(403, 404, 409, 412),
        response_headers=COMMAND_HEADERS,
    )
    async def deliver(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        order_id: uuid.UUID,
        if_match: IfMatch = None,
        idempotency_key: Key = None,
    ) -> Response[CommandAccepted]:
        return await run_command(
            request,
            runtime,
            "orders.deliver",
            runtime.chronicle.ordering.deliver,
            order_id,
            expected_version(if_match),
            idempotency_key=idempotency_key,
        )

    @post(
        "/{order_id:uuid}/cancel",
        operation_id="CancelOrder",
        summary="Cancel an order before it ships; its reserved stock is released",
        status_code=200,
        responses=command(403, 404, 409, 412),
        response_headers=COMMAND_HEADERS,
    )
    async def cancel(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        order_id: uuid.UUID,
        if_match: IfMatch = None,
        idempotency_key: Key = None,
    ) -> Response[CommandAccepted]:
        return await run_command(
            request,
            runtime,
            "orders.cancel",
            runtime.chronicle.ordering.cancel,
            order_id,
            expected_version(if_match),
            idempotency_key=idempotency_key,
        )

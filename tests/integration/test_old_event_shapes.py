"""Events stored before the events were typed (a `changes` dict in `Task.Edited` and
`Product.Edited`, plain objects as an order's lines) still load into aggregates, still drive the
saga's decisions, and still build the views, read raw from the events table."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from commands.base import Actor, ChronicleApplication, Context
from commands.order_saga import OrderSaga
from domain.catalog import Product
from domain.identity import Role
from domain.inventory import Stock
from domain.ordering import Order, OrderLine, OrderStatus
from domain.work import Priority, Task
from infra.bootstrap import Chronicle, bootstrap
from infra.eventstore.envelope import LOG_COLUMNS, EnvelopeReader, EventEnvelope
from infra.settings import Settings
from infra.views.redisstore import BufferedRedisView
from infra.views.sqlstore import BufferedSqlView
from projections.catalog import CatalogCache, ProductCatalog
from projections.orders import OrderHistory
from projections.tasks import TaskList


@pytest.fixture
def chronicle(settings: Settings) -> Iterator[Chronicle]:
    app = bootstrap(settings)
    yield app
    app.close()


def _actor(chronicle: Chronicle, *roles: Role) -> Actor:
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    result = chronicle.identity.register(Context("auth.register"), email, "Ada Lovelace", "correct horse battery")
    return Actor(result.id, frozenset({Role.MEMBER, *roles}))


def store_v1(app: ChronicleApplication, stream_id: uuid.UUID, version: int, cls: type[Any], **state: Any) -> None:
    """Appends an event the way version 1 of its class was stored: its old fields, no class_version."""
    encoded = app.mapper.transcoder.encode({"timestamp": cls.create_timestamp(), **state})
    app.recorder.insert_events([StoredEvent(stream_id, version, get_topic(cls), encoded)])


def envelopes(settings: Settings, stream_id: uuid.UUID) -> list[EventEnvelope]:
    with psycopg.connect(settings.database_url or "") as conn:
        rows = conn.execute(
            f"SELECT {LOG_COLUMNS} FROM events WHERE stream_id = %s ORDER BY version", (stream_id,)
        ).fetchall()
    return EnvelopeReader().from_rows(rows, 0)


def sql_rows(projection: Any, events: list[EventEnvelope]) -> list[tuple[str, list[Any]]]:
    view = BufferedSqlView({t: f"v.{t}" for t in projection.tables}, projection.keys)
    for event in events:
        projection.apply(event, view)
    return view.statements()


def test_an_old_task_edit_loads_and_builds_the_task_list(chronicle: Chronicle) -> None:
    owner = _actor(chronicle)
    ctx = Context("tests", actor=owner)
    project = chronicle.work.create_project(ctx, "Legacy", None)
    task = chronicle.work.create_task(ctx, project.id, "Old title", None, Priority.LOW, date(2027, 1, 1))
    store_v1(chronicle.work, task.id, 2, Task.Edited, changes={"title": "Renamed long ago", "priority": "urgent"})
    store_v1(chronicle.work, task.id, 3, Task.Edited, changes={"due_date": None, "description": "cleared"})

    loaded = chronicle.work.load_task(task.id, fresh=True)
    assert (loaded.title, loaded.priority, loaded.due_date, loaded.description) == (
        "Renamed long ago",
        Priority.URGENT,
        None,
        "cleared",
    )
    chronicle.work.edit_task(ctx, task.id, {"due_date": date(2027, 3, 1)})  # appends after the old ones
    assert chronicle.work.load_task(task.id, fresh=True).due_date == date(2027, 3, 1)

    events = envelopes(chronicle.settings, task.id)
    assert [e.type for e in events] == ["Task.Created", "Task.Edited", "Task.Edited", "Task.Edited"]
    assert "changes" in events[1].data and events[3].data["class_version"] == 2
    ((insert, (row,)),) = sql_rows(TaskList(), events)
    assert insert.startswith("INSERT")
    columns = dict(zip(insert.split("(")[1].split(")")[0].split(", "), row, strict=True))
    assert (columns["title"], columns["priority"], columns["priority_rank"]) == ("Renamed long ago", "urgent", 3)
    assert (columns["description"], columns["due_date"]) == ("cleared", date(2027, 3, 1))


def test_an_old_product_edit_loads_and_builds_both_catalog_views(chronicle: Chronicle) -> None:
    ctx = Context("tests", actor=_actor(chronicle, Role.MANAGER))
    sku = f"OLD-{uuid.uuid4().hex[:8].upper()}"
    product = chronicle.catalog.create_product(ctx, sku, "Widget", "small", 250, "EUR")
    store_v1(chronicle.catalog, product.id, 2, Product.Edited, sku=sku, changes={"name": "Gadget"})

    assert chronicle.catalog.load(Product, product.id, "product", fresh=True).name == "Gadget"
    events = envelopes(chronicle.settings, product.id)
    ((_, (row,)),) = sql_rows(ProductCatalog(), events)
    assert "Gadget" in row and "gadget" in row and "Widget" not in row
    view = BufferedRedisView("p:", {})
    for event in events:
        CatalogCache().apply(event, view)
    assert view.hash(f"product:{sku}")["name"] == "Gadget"


def test_an_old_order_loads_with_typed_lines_that_the_saga_reserves(chronicle: Chronicle) -> None:
    staff = Context("tests", actor=_actor(chronicle, Role.MANAGER))
    sku = f"OLD-{uuid.uuid4().hex[:8].upper()}"
    chronicle.catalog.create_product(staff, sku, "Widget", None, 250, "EUR")
    chronicle.inventory.receive(staff, sku, 5)
    order_id, customer = uuid.uuid4(), uuid.uuid4()
    old_lines = [{"sku": sku, "quantity": 2, "unit_price_minor": 250, "currency": "EUR"}]
    store_v1(
        chronicle.ordering,
        order_id,
        1,
        Order.Placed,
        originator_topic=get_topic(Order),
        customer_id=customer,
        lines=old_lines,
        total_minor=500,
        currency="EUR",
    )

    order = chronicle.ordering.order(order_id, fresh=True)
    assert order.lines == (OrderLine(sku, 2, 250, "EUR"),) and order.total_minor == 500
    decision = OrderSaga(chronicle.inventory, timedelta(minutes=15)).decide("Order.Placed", order_id)
    stock, reserved = decision.changed
    assert isinstance(stock, Stock) and stock.reservations == {str(order_id): 2}
    assert isinstance(reserved, Order) and reserved.status is OrderStatus.RESERVED
    events = envelopes(chronicle.settings, order_id)
    assert events[0].data["lines"] == old_lines
    statements = sql_rows(OrderHistory(), events)
    assert statements[0][1][0][3].obj == old_lines

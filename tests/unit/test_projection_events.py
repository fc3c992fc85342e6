"""Projections name only events the domain has, say what they do with anything else, and build the
same views from an event whatever shape it was stored in (before and after the typed events)."""

from __future__ import annotations

import ast
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Mapper
from psycopg.types.json import Jsonb

from commands.base import make_transcoder
from commands.order_saga import HANDLES as SAGA_HANDLES
from domain.catalog import Product
from domain.ordering import Order, OrderLine
from domain.work import Priority, Project, Task
from infra.eventstore.envelope import EnvelopeReader, EventEnvelope
from infra.views.redisstore import BufferedRedisView
from infra.views.sqlstore import BufferedSqlView
from projections import all_projections
from projections.base import SqlProjection
from projections.catalog import CatalogCache, ProductCatalog
from projections.events import domain_events, event_name, handled, upcast
from projections.orders import OrderHistory
from projections.tasks import TaskList

PROJECTIONS = Path(__file__).resolve().parents[2] / "src" / "projections"
OWNER = uuid.UUID("00000000-0000-4000-8000-000000000001")
WHEN = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
transcoder = make_transcoder()
reader = EnvelopeReader(transcoder)


def unknown_names(handles: frozenset[str]) -> set[str]:
    return set(handles) - set(domain_events())


def test_every_projection_and_the_saga_name_only_events_of_the_domain() -> None:
    for projection in all_projections():
        assert isinstance(projection.handles, frozenset) and projection.handles, projection.name
        assert all(isinstance(name, str) for name in projection.handles), projection.name
        assert not unknown_names(projection.handles), f"{projection.name} names {unknown_names(projection.handles)}"
    assert not unknown_names(SAGA_HANDLES), f"the order saga names {unknown_names(SAGA_HANDLES)}"


def test_the_check_catches_a_name_the_domain_does_not_have() -> None:
    assert unknown_names(frozenset({"Task.Created", "Task.Renamed"})) == {"Task.Renamed"}


def test_handled_derives_the_stored_names_and_refuses_a_class_outside_the_domain() -> None:
    assert handled(Task.Created, Product.Edited, Order.Placed) == {"Task.Created", "Product.Edited", "Order.Placed"}

    class Stray(Aggregate):
        class Happened(Aggregate.Event):
            pass

    with pytest.raises(ValueError, match=r"Stray\.Happened"):
        event_name(Stray.Happened)


def test_the_domain_events_are_the_ones_commands_record() -> None:
    """The registry finds events declared in the aggregates, not the bases the library adds."""
    names = set(domain_events())
    assert {"Order.Placed", "Task.Edited", "Stock.Opened", "User.Registered", "Project.Created"} <= names
    assert not {"Order.Created", "Stock.Created", "Task.Event", "User.Created"} & names


def _matches(tree: ast.AST) -> list[ast.Match]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Match)]


def _has_default(match: ast.Match) -> bool:
    last = match.cases[-1]
    return isinstance(last.pattern, ast.MatchAs) and last.pattern.pattern is None and last.guard is None


def test_every_match_in_the_projections_has_a_default_case() -> None:
    files = sorted(PROJECTIONS.glob("*.py"))
    missing = [
        f"{path.name}:{match.lineno}"
        for path in files
        for match in _matches(ast.parse(path.read_text()))
        if not _has_default(match)
    ]
    assert files and not missing, f"match without `case _:` at {missing}"
    assert not _has_default(ast.parse("match x:\n    case 1:\n        pass\n").body[0])  # type: ignore[arg-type]


# -- the same view from either stored shape ------------------------------------------------------------


def envelope(type_: str, state: bytes, stream_id: uuid.UUID, version: int = 2) -> EventEnvelope:
    return EventEnvelope(
        event_id=uuid.uuid4(),
        position=version,
        previous=version - 1,
        stream_id=stream_id,
        version=version,
        type=type_,
        context="test",
        data=reader.data(state),
        recorded_at=WHEN,
    )


def stored_now(aggregate: Aggregate) -> list[EventEnvelope]:
    """The aggregate's new events as the current code stores and the envelope reader reads them."""
    mapper: Mapper[uuid.UUID] = Mapper(transcoder)
    envelopes = []
    for event in aggregate.collect_events():
        object.__setattr__(event, "timestamp", WHEN)
        stored = mapper.to_stored_event(event)
        envelopes.append(envelope(type(event).__qualname__, stored.state, aggregate.id, event.originator_version))
    return envelopes


def stored_before(type_: str, stream_id: uuid.UUID, **fields: Any) -> EventEnvelope:
    """An event as version 1 stored it: the transcoder's JSON of the old fields, no class_version."""
    return envelope(type_, transcoder.encode({"timestamp": WHEN, **fields}), stream_id)


def sql_writes(projection: SqlProjection, event: EventEnvelope) -> list[tuple[str, list[Any]]]:
    """The statements the projection's `apply` makes of the event (JSON parameters by their value)."""
    view = BufferedSqlView({t: f"v.{t}" for t in projection.tables}, projection.keys)
    projection.apply(event, view)
    return [
        (sql, [tuple(("jsonb", v.obj) if isinstance(v, Jsonb) else v for v in row) for row in rows])
        for sql, rows in view.statements()
    ]


def a_task() -> Task:
    project = Project.create("Apollo", None, OWNER)
    task = Task.create(project, "Build it", "old", Priority.LOW, date(2027, 1, 1), OWNER)
    task.collect_events()
    return task


@pytest.mark.parametrize(
    ("edit", "old_changes"),
    [
        ({"title": "Build more", "priority": "urgent"}, {"title": "Build more", "priority": "urgent"}),
        ({"due_date": None, "description": "new"}, {"due_date": None, "description": "new"}),
        ({"due_date": date(2027, 5, 1)}, {"due_date": date(2027, 5, 1)}),
    ],
)
def test_a_task_edit_stored_either_way_changes_the_task_list_alike(
    edit: dict[str, Any], old_changes: dict[str, Any]
) -> None:
    task = a_task()
    project = Project.create("Apollo", None, OWNER)
    task.edit(project, **edit)
    (new,) = stored_now(task)
    old = stored_before("Task.Edited", task.id, changes=old_changes)
    assert "changes" in old.data and "changes" not in new.data and new.data["class_version"] == 2
    assert sql_writes(TaskList(), old) == sql_writes(TaskList(), new)
    assert sql_writes(TaskList(), new)[0][1][0][0] is not None  # it did write something


def test_upcasting_plain_task_edit_data_gives_the_current_shape_as_plain_json() -> None:
    old = {"changes": {"due_date": None, "title": "x"}, "timestamp": "2026-11-27T09:30:00+00:00"}
    assert upcast(Task.Edited, old) == {
        "title": "x",
        "description": None,
        "priority": None,
        "due_date": None,
        "due_date_cleared": True,
        "timestamp": "2026-11-27T09:30:00+00:00",
    }
    assert old["changes"] == {"due_date": None, "title": "x"}, "the envelope's own data is left as it was"
    current = {"title": "y", "due_date": "2027-01-01", "due_date_cleared": False, "class_version": 2}
    assert upcast(Task.Edited, current) == {"title": "y", "due_date": "2027-01-01", "due_date_cleared": False}


def a_product() -> Product:
    product = Product.create("SKU-1", "Widget", "small", 250, "EUR")
    product.collect_events()
    return product


@pytest.mark.parametrize("edit", [{"name": "Gadget"}, {"description": "large"}, {"name": "G", "description": "d"}])
def test_a_product_edit_stored_either_way_changes_both_catalog_views_alike(edit: dict[str, str]) -> None:
    product = a_product()
    product.edit(edit.get("name"), edit.get("description"))
    (new,) = stored_now(product)
    old = stored_before("Product.Edited", product.id, sku="SKU-1", changes=edit)
    assert sql_writes(ProductCatalog(), old) == sql_writes(ProductCatalog(), new)

    def redis_writes(event: EventEnvelope) -> tuple[list[str], bytes]:
        before = {"sku": "SKU-1", "name": "Widget", "description": "small", "price_minor": "250"}
        before |= {"currency": "EUR", "active": "1", "available": "3", "reserved": "0", "version": "1"}
        view = BufferedRedisView("p:", {"product:SKU-1": before})
        CatalogCache().apply(event, view)
        return view.encoded()

    assert redis_writes(old) == redis_writes(new)
    assert edit.get("name", "Widget").encode() in redis_writes(new)[1]


def test_an_order_placed_either_way_gives_the_same_order_history() -> None:
    lines = [OrderLine("SKU-1", 2, 250, "EUR"), OrderLine("SKU-2", 1, 100, "EUR")]
    order = Order.place(OWNER, lines)
    (new,) = stored_now(order)
    old_lines = [
        {"sku": "SKU-1", "quantity": 2, "unit_price_minor": 250, "currency": "EUR"},
        {"sku": "SKU-2", "quantity": 1, "unit_price_minor": 100, "currency": "EUR"},
    ]
    old = stored_before("Order.Placed", order.id, customer_id=OWNER, lines=old_lines, total_minor=600, currency="EUR")
    old = EventEnvelope(**{**{f: getattr(old, f) for f in old.__struct_fields__}, "version": 1, "position": 1})
    new = EventEnvelope(**{**{f: getattr(new, f) for f in new.__struct_fields__}, "event_id": old.event_id})
    assert new.data["lines"] == old.data["lines"] == old_lines
    assert sql_writes(OrderHistory(), old) == sql_writes(OrderHistory(), new)

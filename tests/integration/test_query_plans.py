"""The list queries' plans on 100k tasks: each shape is served by an index, never a scan of the
whole table. (The SQL is the routes' own: the task list's `task_list_query`.)"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import date
from typing import Any

import psycopg
import pytest

from api.queries.work import TaskSort
from domain.work import Priority, TaskStatus
from infra.views.sqlstore import SqlStore
from projections.projects import ProjectCatalog
from projections.tasks import TaskFilter, TaskList, task_list_query

PROJECTS, PER_PROJECT = 50, 2000


@pytest.fixture(scope="module")
def plans_db(servers: Any) -> Any:
    from infra.devstack.scratch import create_database, drop_database
    from infra.eventstore.migrate import migrate

    url = create_database(servers.database_url)
    migrate(url)

    async def build() -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            for projection in (TaskList(), ProjectCatalog()):
                store = SqlStore(conn, projection, 1)
                await store.prepare()
                await store.publish_views()
            await conn.execute(f"""
                INSERT INTO work_views.tasks_v1 (id, project_id, title, description, priority, priority_rank,
                    due_date, due_sort, status, assignee_id, created_by, created_at, updated_at, version)
                SELECT gen_random_uuid(), ('00000000-0000-0000-0000-' || lpad((i % {PROJECTS})::text, 12, '0'))::uuid,
                    'task ' || md5(i::text), '', (ARRAY['low','normal','high','urgent'])[1 + i % 4], i % 4,
                    CASE WHEN i % 3 = 0 THEN NULL ELSE date '2027-01-01' + (i % 365) END,
                    CASE WHEN i % 3 = 0 THEN date '9999-12-31' ELSE date '2027-01-01' + (i % 365) END,
                    (ARRAY['todo','in_progress','done'])[1 + i % 3],
                    CASE WHEN i % 5 = 0 THEN NULL
                         ELSE ('00000000-0000-0000-0001-' || lpad((i % 20)::text, 12, '0'))::uuid END,
                    gen_random_uuid(), now() - i * interval '1 minute', now(), 1
                FROM generate_series(1, {PROJECTS * PER_PROJECT}) i""")
            await conn.execute("ANALYZE work_views.tasks_v1")

    asyncio.run(build())
    yield url
    drop_database(url)


def _plan(url: str, sql: str, params: dict[str, Any]) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        row = conn.execute(("EXPLAIN (FORMAT JSON) " + sql).encode(), params).fetchone()
    assert row is not None
    plan: dict[str, Any] = (row[0] if isinstance(row[0], list) else json.loads(row[0]))[0]["Plan"]
    return plan


def _nodes(plan: dict[str, Any]) -> list[tuple[str, str]]:
    found = [(plan["Node Type"], plan.get("Relation Name", ""))]
    for child in plan.get("Plans", []):
        found += _nodes(child)
    return found


PROJECT = uuid.UUID("00000000-0000-0000-0000-000000000007")
ASSIGNEE = uuid.UUID("00000000-0000-0000-0001-000000000007")
SHAPES = [{"sort": s} for s in TaskSort] + [
    {"status": TaskStatus.TODO},
    {"priority": Priority.URGENT, "sort": TaskSort.DUE},
    {"assignee": ASSIGNEE},
    {"assignee": "none", "sort": TaskSort.TITLE},
    {"due_before": date(2027, 2, 1)},
    {"q": "abc", "sort": TaskSort.TITLE},
    {"status": TaskStatus.DONE, "sort": TaskSort.PRIORITY_DESC},
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "&".join(f"{k}={v}" for k, v in s.items()))
def test_every_list_shape_is_served_by_an_index(plans_db: str, shape: dict[str, Any]) -> None:
    sql, params = task_list_query(PROJECT, TaskFilter(**shape, limit=51))
    nodes = _nodes(_plan(plans_db, sql, params))
    assert ("Seq Scan", "tasks_v1") not in nodes, nodes
    assert any(kind.startswith(("Index", "Bitmap")) for kind, _ in nodes), nodes


def test_the_next_page_is_a_keyset_seek(plans_db: str) -> None:
    sql, params = task_list_query(
        PROJECT, TaskFilter(sort=TaskSort.DUE, after=(date(2027, 6, 1), uuid.UUID(int=0)), limit=51)
    )
    nodes = _nodes(_plan(plans_db, sql, params))
    assert ("Seq Scan", "tasks_v1") not in nodes and nodes[0][0] == "Limit", nodes

"""TaskList: every task with all its fields, indexed for the list queries (filters and keyset
pagination per sort order)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from domain.access import Actor
from domain.work import Priority, Task, TaskStatus
from infra.eventstore.envelope import EventEnvelope
from projections.base import SqlProjection, SqlView, contains, date_or_none, uuid_or_none, when
from projections.events import event_class, handled, upcast
from projections.projects import VISIBLE, visibility

PRIORITY_RANK = {"low": 0, "normal": 1, "high": 2, "urgent": 3}
NO_DUE_DATE = "9999-12-31"  # tasks without a due date sort after every date


class TaskList(SqlProjection):
    name = "task_list"
    partitioned = True  # a row is one task, made from that task's events only
    version = 1
    schema = "work_views"
    description = "tasks: all fields, status, assignee, dates"
    handles = handled(
        Task.Created, Task.Edited, Task.Assigned, Task.Unassigned, Task.Started, Task.Completed, Task.Reopened
    )
    tables = {
        "tasks": "CREATE TABLE {tasks} (id uuid PRIMARY KEY, project_id uuid NOT NULL, title text NOT NULL,"
        " description text NOT NULL, priority text NOT NULL, priority_rank smallint NOT NULL,"
        " due_date date, due_sort date NOT NULL, status text NOT NULL, assignee_id uuid,"
        " created_by uuid NOT NULL, created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL,"
        " completed_at timestamptz, version bigint NOT NULL);"
        " CREATE INDEX ON {tasks} (project_id, created_at, id);"
        " CREATE INDEX ON {tasks} (project_id, due_sort, id);"
        " CREATE INDEX ON {tasks} (project_id, priority_rank, id);"
        ' CREATE INDEX ON {tasks} (project_id, title COLLATE "C", id);'
        " CREATE INDEX ON {tasks} (assignee_id, status) WHERE assignee_id IS NOT NULL;"
        " CREATE INDEX ON {tasks} USING gin (title gin_trgm_ops)",
    }
    keys = {"tasks": ("id",)}

    def apply(self, event: EventEnvelope, view: SqlView) -> None:
        data = event.data
        match event_class(event):
            case Task.Created:
                due = date_or_none(data.get("due_date"))
                view.insert(
                    "tasks",
                    {
                        "id": event.stream_id,
                        "project_id": uuid_or_none(data["project_id"]),
                        "title": data["title"],
                        "description": data.get("description", ""),
                        "priority": data["priority"],
                        "priority_rank": PRIORITY_RANK[data["priority"]],
                        "due_date": due,
                        "due_sort": due or date.fromisoformat(NO_DUE_DATE),
                        "status": "todo",
                        "assignee_id": None,
                        "created_by": uuid_or_none(data["created_by"]),
                        "created_at": when(event),
                        "updated_at": when(event),
                        "completed_at": None,
                        "version": event.version,
                    },
                )
            case Task.Edited:
                self._set(view, event, **_edits(upcast(Task.Edited, data)))
            case Task.Assigned:
                self._set(view, event, assignee_id=uuid_or_none(data["assignee_id"]))
            case Task.Unassigned:
                self._set(view, event, assignee_id=None)
            case Task.Started:
                self._set(view, event, status="in_progress")
            case Task.Completed:
                self._set(view, event, status="done", completed_at=when(event))
            case Task.Reopened:
                self._set(view, event, status="todo", completed_at=None)
            case _:
                pass  # not one of `handles`: the projector never sends it

    @staticmethod
    def _set(view: SqlView, event: EventEnvelope, **columns: Any) -> None:
        view.update("tasks", (event.stream_id,), {**columns, "updated_at": when(event), "version": event.version})


def _edits(edited: dict[str, Any]) -> dict[str, Any]:
    """The columns a `Task.Edited` (current shape) changes."""
    columns: dict[str, Any] = {key: edited[key] for key in ("title", "description") if edited.get(key) is not None}
    if edited.get("priority") is not None:
        columns["priority"], columns["priority_rank"] = edited["priority"], PRIORITY_RANK[edited["priority"]]
    if edited.get("due_date") is not None or edited.get("due_date_cleared"):
        due = date_or_none(edited.get("due_date"))
        columns["due_date"], columns["due_sort"] = due, due or date.fromisoformat(NO_DUE_DATE)
    return columns


# -- queries ------------------------------------------------------------------------------------------
# They return rows of this view's tables; the API shapes them into its response types (whose module
# is part of the OpenAPI document: a generic `Page[T]` is named after T's module). Who may see a task
# is who may see its project: project_catalog's `VISIBLE`.

TASK_COLUMNS = (
    "id, project_id, title, description, priority, due_date, status, assignee_id, created_by,"
    " created_at, updated_at, completed_at, version"
)
SORT_COLUMNS = {"created": "created_at", "due": "due_sort", "priority": "priority_rank", "title": 'title COLLATE "C"'}
Rows = list[tuple[Any, ...]]


@dataclass(frozen=True, kw_only=True)
class TaskFilter:
    """Which of a project's tasks a list page holds, in what order, from where."""

    status: TaskStatus | None = None
    priority: Priority | None = None
    assignee: uuid.UUID | Literal["none"] | None = None
    """A user's tasks, or with `"none"` the unassigned ones."""
    due_before: date | None = None
    q: str | None = None
    """Text in the title."""
    sort: str = "-created"
    """A key of SORT_COLUMNS, after a `-` for descending."""
    after: tuple[Any, uuid.UUID] | None = None
    """The (sort value, id) of the last row of the previous page."""
    limit: int = 50


def task_list_query(
    project_id: uuid.UUID, f: TaskFilter, visible_to: Actor | None = None
) -> tuple[str, dict[str, Any]]:
    """The SQL of a task list page: TASK_COLUMNS and the sort value of up to `f.limit` rows, keyset
    paginated on (sort column, id). Every shape is served by an index (see
    tests/integration/test_query_plans.py)."""
    where, params = ["project_id = %(project)s"], {"project": project_id, "limit": f.limit}
    if visible_to is not None:
        where.append(VISIBLE.format(project="%(project)s"))
        params |= visibility(visible_to)
    if f.status:
        where.append("status = %(status)s")
        params["status"] = f.status.value
    if f.priority:
        where.append("priority = %(priority)s")
        params["priority"] = f.priority.value
    if f.assignee == "none":
        where.append("assignee_id IS NULL")
    elif f.assignee is not None:
        where.append("assignee_id = %(assignee)s")
        params["assignee"] = f.assignee
    if f.due_before:
        where.append("due_date < %(due_before)s")
        params["due_before"] = f.due_before
    if f.q:
        where.append("title ILIKE %(q)s")
        params["q"] = contains(f.q)
    descending = f.sort.startswith("-")
    column = SORT_COLUMNS[f.sort.lstrip("-")]
    if f.after is not None:
        where.append(f"({column}, id) {'<' if descending else '>'} (%(after)s, %(last)s::uuid)")
        params |= {"after": f.after[0], "last": f.after[1]}
    direction = "DESC" if descending else "ASC"
    sort_key = column.split(" ")[0]
    return (
        f"SELECT {TASK_COLUMNS}, {sort_key} FROM work_views.tasks WHERE {' AND '.join(where)}"
        f" ORDER BY {column} {direction}, id {direction} LIMIT %(limit)s"
    ), params


async def task_rows(
    views: AsyncConnectionPool[AsyncConnection[Any]], project_id: uuid.UUID, f: TaskFilter, visible_to: Actor
) -> Rows:
    """A task list page (see `task_list_query`); empty too when `visible_to` may not see the project."""
    sql, params = task_list_query(project_id, f, visible_to)
    async with views.connection() as conn:
        rows: Rows = await (await conn.execute(sql, params)).fetchall()
    return rows


async def visible_tasks_in_order(
    views: AsyncConnectionPool[AsyncConnection[Any]], ids: list[str], actor: Actor, limit: int
) -> tuple[int, Rows]:
    """How many of `ids` (task ids as text) exist in projects `actor` may see, and TASK_COLUMNS of
    the first `limit` of them, in the order of `ids`. One statement; the ids travel as one array
    literal, not one parameter value each."""
    async with views.connection() as conn:
        rows: Rows = await (
            await conn.execute(
                f"SELECT {TASK_COLUMNS}, count(*) OVER () FROM unnest(%(ids)s::uuid[]) WITH ORDINALITY AS x(id, ord)"
                " JOIN work_views.tasks t USING (id) WHERE "
                + VISIBLE.format(project="t.project_id")
                + " ORDER BY x.ord LIMIT %(limit)s",
                {"ids": "{" + ",".join(ids) + "}", "limit": limit, **visibility(actor)},
            )
        ).fetchall()
    return (int(rows[0][-1]) if rows else 0), [row[:-1] for row in rows]

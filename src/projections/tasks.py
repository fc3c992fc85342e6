"""TaskList: every task with all its fields, indexed for the list queries (filters and keyset
pagination per sort order)."""

from __future__ import annotations

from datetime import date
from typing import Any

from domain.work import Task
from infra.eventstore.envelope import EventEnvelope
from projections.base import SqlProjection, SqlView, date_or_none, uuid_or_none, when
from projections.events import event_class, handled, upcast

PRIORITY_RANK = {"low": 0, "normal": 1, "high": 2, "urgent": 3}
NO_DUE_DATE = "9999-12-31"  # tasks without a due date sort after every date


class TaskList(SqlProjection):
    name = "task_list"
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

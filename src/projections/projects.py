"""ProjectCatalog: projects with owner, members, archived flag and task counts."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from domain import access
from domain.access import Actor
from domain.work import Project, Task
from infra.eventstore.envelope import EventEnvelope
from projections.base import SqlProjection, SqlView, uuid_or_none, when
from projections.events import event_class, handled

KNOWN_TASKS = 100_000


class ProjectCatalog(SqlProjection):
    name = "project_catalog"
    version = 1
    schema = "work_views"
    description = "projects (owner, members, archived, task counts) and memberships"
    handles = handled(
        Project.Created,
        Project.Renamed,
        Project.Archived,
        Project.MemberAdded,
        Project.MemberRemoved,
        Task.Created,
        Task.Completed,
        Task.Reopened,
    )
    tables = {
        "projects": "CREATE TABLE {projects} (id uuid PRIMARY KEY, name text NOT NULL, description text NOT NULL,"
        " owner_id uuid NOT NULL, archived boolean NOT NULL DEFAULT false,"
        " task_count integer NOT NULL DEFAULT 0, done_count integer NOT NULL DEFAULT 0,"
        " created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL, version bigint NOT NULL);"
        " CREATE INDEX ON {projects} (created_at, id)",
        "members": "CREATE TABLE {members} (user_id uuid NOT NULL, project_id uuid NOT NULL,"
        " PRIMARY KEY (user_id, project_id)); CREATE INDEX ON {members} (project_id)",
        "task_projects": "CREATE TABLE {task_projects} (task_id uuid PRIMARY KEY, project_id uuid NOT NULL)",
    }
    keys = {"projects": ("id",), "members": ("user_id", "project_id"), "task_projects": ("task_id",)}

    def __init__(self) -> None:
        # Which project a task is in never changes; remembering it spares a lookup per completion.
        # Only a shortcut: without it, the view's task_projects table answers.
        self._project_of: OrderedDict[uuid.UUID, uuid.UUID] = OrderedDict()

    def apply(self, event: EventEnvelope, view: SqlView) -> None:
        data, project = event.data, event.stream_id
        kind = event_class(event)
        match kind:
            case Project.Created:
                owner = uuid_or_none(data["owner_id"])
                view.insert(
                    "projects",
                    {
                        "id": project,
                        "name": data["name"],
                        "description": data.get("description", ""),
                        "owner_id": owner,
                        "archived": False,
                        "task_count": 0,
                        "done_count": 0,
                        "created_at": when(event),
                        "updated_at": when(event),
                        "version": event.version,
                    },
                )
                view.insert("members", {"user_id": owner, "project_id": project})
            case Project.Renamed:
                self._touch(view, event, name=data["name"])
            case Project.Archived:
                self._touch(view, event, archived=True)
            case Project.MemberAdded:
                view.insert("members", {"user_id": uuid_or_none(data["user_id"]), "project_id": project})
                self._touch(view, event)
            case Project.MemberRemoved:
                view.delete("members", (uuid_or_none(data["user_id"]), project))
                self._touch(view, event)
            case Task.Created:
                of = uuid_or_none(data["project_id"])
                assert of is not None
                view.insert("task_projects", {"task_id": event.stream_id, "project_id": of})
                view.increment("projects", (of,), "task_count", 1)
                self._remember(event.stream_id, of)
            case Task.Completed | Task.Reopened:
                delta = 1 if kind is Task.Completed else -1
                known = self._project_of.get(event.stream_id)
                if known is not None:
                    view.increment("projects", (known,), "done_count", delta)
                else:
                    view.execute(
                        "UPDATE {projects} SET done_count = done_count + %s WHERE id ="
                        " (SELECT project_id FROM {task_projects} WHERE task_id = %s)",
                        (delta, event.stream_id),
                    )
            case _:
                pass  # not one of `handles`: the projector never sends it

    @staticmethod
    def _touch(view: SqlView, event: EventEnvelope, **columns: object) -> None:
        view.update("projects", (event.stream_id,), {**columns, "updated_at": when(event), "version": event.version})

    def _remember(self, task: uuid.UUID, project: uuid.UUID) -> None:
        self._project_of[task] = project
        while len(self._project_of) > KNOWN_TASKS:
            self._project_of.popitem(last=False)


# -- queries ------------------------------------------------------------------------------------------
# They return rows of this view's tables; the API shapes them into its response types (whose module
# is part of the OpenAPI document: a generic `Page[T]` is named after T's module).

PROJECT_COLUMNS = (
    "p.id, p.name, p.description, p.owner_id, coalesce((SELECT array_agg(m.user_id ORDER BY m.user_id)"
    " FROM work_views.members m WHERE m.project_id = p.id), '{}'), p.archived, p.task_count,"
    " p.done_count, p.task_count - p.done_count, p.created_at, p.updated_at, p.version"
)
VISIBLE = (
    "(%(staff)s OR EXISTS (SELECT 1 FROM work_views.members m WHERE m.project_id = {project} AND m.user_id = %(user)s))"
)
"""`access.may_see_project` in SQL, for the project whose id is the SQL `{project}`; its parameters
are `visibility(actor)`. The task list's queries use it too: a task is seen through its project."""
Rows = list[tuple[Any, ...]]


def visibility(actor: Actor) -> dict[str, Any]:
    """The parameters of `VISIBLE`."""
    return {"staff": access.sees_every_project(actor), "user": actor.user_id}


async def project_row(
    views: AsyncConnectionPool[AsyncConnection[Any]], project_id: uuid.UUID, actor: Actor
) -> tuple[Any, ...] | None:
    """The project's PROJECT_COLUMNS, or None if there is no such project or `actor` may not see it."""
    async with views.connection() as conn:
        row: tuple[Any, ...] | None = await (
            await conn.execute(
                f"SELECT {PROJECT_COLUMNS} FROM work_views.projects p WHERE p.id = %(id)s AND "
                + VISIBLE.format(project="p.id"),
                {"id": project_id, **visibility(actor)},
            )
        ).fetchone()
    return row


async def project_rows(
    views: AsyncConnectionPool[AsyncConnection[Any]],
    actor: Actor,
    *,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> Rows:
    """PROJECT_COLUMNS of up to `limit` projects `actor` may see, oldest first, after the cursor's
    (created_at, id)."""
    params: dict[str, Any] = {**visibility(actor), "limit": limit}
    seek = ""
    if after is not None:
        seek = " AND (p.created_at, p.id) > (%(created)s::timestamptz, %(last)s::uuid)"
        params |= {"created": after[0], "last": after[1]}
    async with views.connection() as conn:
        rows: Rows = await (
            await conn.execute(
                f"SELECT {PROJECT_COLUMNS} FROM work_views.projects p WHERE "
                + VISIBLE.format(project="p.id")
                + seek
                + " ORDER BY p.created_at, p.id LIMIT %(limit)s",
                params,
            )
        ).fetchall()
    return rows

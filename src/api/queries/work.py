"""Query routes of the work context: projects, tasks, boards and "my tasks", from read models only.

A project (and its tasks and board) is visible to its members, managers and admins; anyone else
gets 404, as if it did not exist.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, get
from litestar.params import Parameter

from api.contract import ETAG, query
from api.queries import cached
from api.queries.common import (
    Cursor,
    Limit,
    MinPosition,
    decode_cursor,
    encode_cursor,
    etag,
    position_of,
    wait_for_position,
)
from api.runtime import RUNTIME, Runtime
from commands.base import Actor
from domain.errors import Invalid, NotFound
from domain.work import Priority, TaskStatus
from projections.board import UNASSIGNED, TaskBoard
from projections.my_tasks import MyTasks, open_task_ids
from projections.projects import ProjectCatalog, project_row, project_rows
from projections.tasks import TaskFilter, TaskList, task_rows, visible_tasks_in_order

PROJECT_VIEWS = [ProjectCatalog.name]
TASK_VIEWS = [ProjectCatalog.name, TaskList.name]


class ProjectView(msgspec.Struct):
    id: uuid.UUID
    name: str
    description: str
    owner_id: uuid.UUID
    members: list[uuid.UUID]
    archived: bool
    task_count: int
    done_task_count: int
    open_task_count: int
    created_at: datetime
    updated_at: datetime
    version: int


class TaskView(msgspec.Struct):
    id: uuid.UUID
    project_id: uuid.UUID
    title: str
    description: str
    priority: str
    due_date: date | None
    status: str
    assignee_id: uuid.UUID | None
    created_by: uuid.UUID
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    version: int


class ProjectPage(msgspec.Struct):
    items: list[ProjectView]
    next_cursor: str | None = None


class TaskPage(msgspec.Struct):
    items: list[TaskView]
    next_cursor: str | None = None


class StatusCounts(msgspec.Struct):
    todo: int = 0
    in_progress: int = 0
    done: int = 0


class AssigneeCounts(msgspec.Struct):
    assignee_id: uuid.UUID | None
    todo: int = 0
    in_progress: int = 0
    done: int = 0


class Board(msgspec.Struct):
    project_id: uuid.UUID
    total: int
    by_status: StatusCounts
    by_assignee: list[AssigneeCounts]


class MyTaskList(msgspec.Struct):
    open_count: int
    items: list[TaskView]


class TaskSort(StrEnum):
    CREATED = "created"
    CREATED_DESC = "-created"
    DUE = "due"
    DUE_DESC = "-due"
    PRIORITY = "priority"
    PRIORITY_DESC = "-priority"
    TITLE = "title"
    TITLE_DESC = "-title"


_CURSORS: dict[str, Any] = {
    "created": tuple[datetime, uuid.UUID],
    "due": tuple[date, uuid.UUID],
    "priority": tuple[int, uuid.UUID],
    "title": tuple[str, uuid.UUID],
}


async def visible_project(runtime: Runtime, actor: Actor, project_id: uuid.UUID) -> ProjectView:
    row = await project_row(runtime.views, project_id, actor)
    if row is None:
        raise NotFound(f"project {project_id} not found")
    return ProjectView(*row)


class ProjectQueries(Controller):
    path = "/v1/projects"
    tags = ["queries"]
    dependencies = RUNTIME

    @get(
        operation_id="ListProjects",
        summary="The caller's projects (all of them for managers and admins)",
        responses=query(),
    )
    async def list_projects(
        self,
        request: Request[Actor, Any, Any],
        runtime: Runtime,
        limit: Limit = 50,
        cursor: Cursor = None,
        min_position: MinPosition = None,
    ) -> ProjectPage:
        await wait_for_position(runtime, request, min_position, PROJECT_VIEWS)
        after = decode_cursor(cursor, tuple[datetime, uuid.UUID]) if cursor else None
        rows = await project_rows(runtime.views, request.user, after=after, limit=limit + 1)
        items = [ProjectView(*row) for row in rows[:limit]]
        more = len(rows) > limit
        return ProjectPage(
            items, encode_cursor([items[-1].created_at.isoformat(), str(items[-1].id)]) if more else None
        )

    @get(
        "/{project_id:uuid}",
        operation_id="GetProject",
        summary="A project",
        responses=query(404),
        response_headers=[ETAG],
    )
    async def get_project(
        self,
        request: Request[Actor, Any, Any],
        runtime: Runtime,
        project_id: uuid.UUID,
        min_position: MinPosition = None,
    ) -> Response[ProjectView]:
        project = await cached.project_entry(runtime, project_id, position_of(min_position))
        if project is None:
            await wait_for_position(runtime, request, min_position, PROJECT_VIEWS)
            project = await cached.read_project(runtime, request.user, project_id, ProjectView)
        elif not cached.visible(request.user, project):
            raise NotFound(f"project {project_id} not found")
        return Response(project, headers=etag(project.version))

    @get(
        "/{project_id:uuid}/tasks",
        operation_id="ListProjectTasks",
        summary="A project's tasks: filtered, sorted, a page at a time",
        responses=query(404),
    )
    async def list_tasks(
        self,
        request: Request[Actor, Any, Any],
        runtime: Runtime,
        project_id: uuid.UUID,
        status: TaskStatus | None = None,
        priority: Priority | None = None,
        assignee: Annotated[str | None, Parameter(description="a user id, or `none` for unassigned")] = None,
        due_before: date | None = None,
        q: Annotated[str | None, Parameter(min_length=1, max_length=200, description="text in the title")] = None,
        sort: TaskSort = TaskSort.CREATED_DESC,
        limit: Limit = 50,
        cursor: Cursor = None,
        min_position: MinPosition = None,
    ) -> TaskPage:
        await wait_for_position(runtime, request, min_position, TASK_VIEWS)
        f = TaskFilter(
            status=status,
            priority=priority,
            assignee=_assignee(assignee),
            due_before=due_before,
            q=q,
            sort=sort.value,
            after=decode_cursor(cursor, _CURSORS[sort.value.lstrip("-")]) if cursor else None,
            limit=limit + 1,
        )
        rows = await task_rows(runtime.views, project_id, f, request.user)
        if not rows:  # empty, or not the caller's to see: only then is the second question asked
            await visible_project(runtime, request.user, project_id)
        items = [TaskView(*row[:-1]) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = encode_cursor([msgspec.to_builtins(last[-1]), str(last[0])])
        return TaskPage(items, next_cursor)

    @get(
        "/{project_id:uuid}/board",
        operation_id="GetProjectBoard",
        summary="Task counts per status and per assignee (from Redis)",
        responses=query(404),
    )
    async def board(
        self,
        request: Request[Actor, Any, Any],
        runtime: Runtime,
        project_id: uuid.UUID,
        min_position: MinPosition = None,
    ) -> Board:
        """One Redis round trip on a miss: the board view keeps the project's members beside its counts."""
        counts = await cached.cached_board(runtime, request.user, project_id, position_of(min_position))
        if counts is None:
            await wait_for_position(runtime, request, min_position, [TaskBoard.name])
            counts = await cached.read_board(runtime, request.user, project_id)
        return _board(project_id, counts)


def _board(project_id: uuid.UUID, counts: dict[str, int]) -> Board:
    by_assignee: dict[str, AssigneeCounts] = {}
    for field, n in counts.items():
        if field.startswith("assignee:") and n:
            _, who, state = field.split(":")
            row = by_assignee.setdefault(who, AssigneeCounts(None if who == UNASSIGNED else uuid.UUID(who)))
            setattr(row, state, n)
    return Board(
        project_id,
        counts.get("total", 0),
        StatusCounts(**{s: counts.get(f"status:{s}", 0) for s in ("todo", "in_progress", "done")}),
        sorted(by_assignee.values(), key=lambda a: str(a.assignee_id or "")),
    )


class TaskQueries(Controller):
    tags = ["queries"]
    dependencies = RUNTIME

    @get(
        "/v1/tasks/{task_id:uuid}",
        operation_id="GetTask",
        summary="A task",
        responses=query(404),
        response_headers=[ETAG],
    )
    async def get_task(
        self, request: Request[Actor, Any, Any], runtime: Runtime, task_id: uuid.UUID, min_position: MinPosition = None
    ) -> Response[TaskView]:
        task = await cached.cached_task(runtime, request.user, task_id, position_of(min_position))
        if task is None:
            await wait_for_position(runtime, request, min_position, TASK_VIEWS)
            task = await cached.read_task(runtime, request.user, task_id, TaskView, ProjectView)
        return Response(task, headers=etag(task.version))

    @get(
        "/v1/me/tasks",
        operation_id="GetMyTasks",
        summary="The caller's open assigned tasks in projects they can see, oldest first (ids from Redis, details from SQL)",
        responses=query(),
    )
    async def my_tasks(
        self, request: Request[Actor, Any, Any], runtime: Runtime, limit: Limit = 50, min_position: MinPosition = None
    ) -> MyTaskList:
        await wait_for_position(runtime, request, min_position, [MyTasks.name, *TASK_VIEWS])
        prefix = await runtime.live_versions.prefix(MyTasks.name)
        ids = await open_task_ids(runtime.redis, prefix, request.user.user_id)
        count, rows = await visible_tasks_in_order(runtime.views, ids, request.user, limit)
        return MyTaskList(count, [TaskView(*row) for row in rows])


def _assignee(value: str | None) -> uuid.UUID | Literal["none"] | None:
    """The `assignee` parameter: a user id, or `none` for the unassigned tasks."""
    if value is None:
        return None
    if value == "none":
        return "none"
    try:
        return uuid.UUID(value)
    except ValueError:
        raise Invalid("assignee must be a user id or `none`", field="assignee") from None

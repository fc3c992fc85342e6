"""Command routes of the work context: projects, members, tasks."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, post

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
from domain.errors import Invalid
from domain.work import MAX_TITLE, Priority

Title = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TITLE)]


class CreateProjectBody(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    description: Description | None = None


class RenameProjectBody(msgspec.Struct, forbid_unknown_fields=True):
    name: Name


class AddMemberBody(msgspec.Struct, forbid_unknown_fields=True):
    user_id: uuid.UUID


class CreateTaskBody(msgspec.Struct, forbid_unknown_fields=True):
    title: Title
    description: Description | None = None
    priority: Priority | None = None
    due_date: date | None = None
    assignee_id: uuid.UUID | None = None


class EditTaskBody(msgspec.Struct, forbid_unknown_fields=True):
    """Send only what changes; `due_date: null` clears the due date."""

    title: Title | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType = msgspec.UNSET
    priority: Priority | msgspec.UnsetType = msgspec.UNSET
    due_date: date | msgspec.UnsetType | None = msgspec.UNSET

    def changes(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__struct_fields__ if getattr(self, f) is not msgspec.UNSET}


class AssignTaskBody(msgspec.Struct, forbid_unknown_fields=True):
    assignee_id: uuid.UUID


class ProjectCommands(Controller):
    path = "/v1/projects"
    tags = ["commands"]
    dependencies = RUNTIME

    @post(
        operation_id="CreateProject",
        opt=links(
            GetProject={"project_id": "$response.body#/id"},
            ListProjectTasks={"project_id": "$response.body#/id"},
            GetProjectBoard={"project_id": "$response.body#/id"},
            CreateTask={"project_id": "$response.body#/id"},
            RenameProject={"project_id": "$response.body#/id"},
            ArchiveProject={"project_id": "$response.body#/id"},
        ),
        summary="Create a project; the caller owns it",
        status_code=201,
        responses=command(),
        response_headers=COMMAND_HEADERS,
    )
    async def create(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        data: Annotated[CreateProjectBody, example({"name": "Launch", "description": "Everything for the launch day"})],
        idempotency_key: Key = None,
    ) -> Response[CommandAccepted]:
        return await run_command(
            request,
            runtime,
            "projects.create",
            runtime.chronicle.work.create_project,
            data.name,
            data.description,
            status=201,
            idempotency_key=idempotency_key,
        )

    @post(
        "/{project_id:uuid}/rename",
        operation_id="RenameProject",
        summary="Rename a project",
        status_code=200,
        responses=command(403, 404, 409, 412),
        response_headers=COMMAND_HEADERS,
    )
    async def rename(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        project_id: uuid.UUID,
        data: Annotated[RenameProjectBody, example({"name": "Launch, second try"})],
        if_match: IfMatch = None,
        idempotency_key: Key = None,
    ) -> Response[CommandAccepted]:
        return await run_command(
            request,
            runtime,
            "projects.rename",
            runtime.chronicle.work.rename_project,
            project_id,
            data.name,
            expected_version(if_match),
            idempotency_key=idempotency_key,
        )

    @post(
        "/{project_id:uuid}/archive",
        operation_id="ArchiveProject",
        summary="Archive a project",
        status_code=200,
        responses=command(403, 404, 409, 412),
        response_headers=COMMAND_HEADERS,
    )
    async def archive(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        project_id: uuid.UUID,
        if_match: IfMatch = None,
        idempotency_key: Key = None,
    ) -> Response[CommandAccepted]:
        return await run_command(
            request,
            runtime,
            "projects.archive",
            runtime.chronicle.work.archive_project,
            project_id,
            expected_version(if_match),
            idempotency_key=idempotency_key,
        )

    @post(
        "/{project_id:uuid}/members",
        operation_id="AddProjectMember",
        summary="Add a member to a project",
        status_code=200,
        responses=command(403, 404, 409, 412),
        response_headers=COMMAND_HEADERS,
    )
    async def add_member(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        project_id: uuid.UUID,
        data: Annotated[AddMemberBody, example({"user_id": "9612e03a-5b1c-4c8e-9d0f-2a7b3c4d5e6f"})],
        if_match: IfMatch = None,
        idempotency_key: Key = None,
    ) -> Response[CommandAccepted]:
        return await run_command(
            request,
            runtime,
            "projects.add_member",
            runtime.chronicle.work.add_member,
            project_id,
            data.user_id,
            expected_version(if_match),
            idempotency_key=idempotency_key,
        )

    @delete(
        "/{project_id:uuid}/members/{user_id:uuid}",
        operation_id="RemoveProjectMember",
        summary="Remove a member from a project",
        status_code=200,
        responses=command(403, 404, 409, 412),
        response_headers=COMMAND_HEADERS,
    )
    async def remove_member(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        project_id: uuid.UUID,
        user_id: uuid.UUID,
        if_match: IfMatch = None,
        idempotency_key: Key = None,
    ) -> Response[CommandAccepted]:
        return await run_command(
            request,
            runtime,
            "projects.remove_member",
            runtime.chronicle.work.remove_member,
            project_id,
            user_id,
            expected_version(if_match),
            idempotency_key=idempotency_key,
        )

    @post(
        "/{project_id:uuid}/tasks",
        operation_id="CreateTask",
        opt=links(
            GetTask={"task_id": "$response.body#/id"},
            EditTask={"task_id": "$response.body#/id"},
            StartTask={"task_id": "$response.body#/id"},
            CompleteTask={"task_id": "$response.body#/id"},
            ReopenTask={"task_id": "$response.body#/id"},
            UnassignTask={"task_id": "$response.body#/id"},
        ),
        summary="Create a task in a project",
        status_code=201,
        responses=command(403, 404, 409),
        response_headers=COMMAND_HEADERS,
    )
    async def create_task(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        project_id: uuid.UUID,
        data: Annotated[
            CreateTaskBody,
            example(
                {
                    "title": "Write the README",
                    "priority": "high",
                    "due_date": "2026-12-01",
                    "assignee_id": "9612e03a-5b1c-4c8e-9d0f-2a7b3c4d5e6f",
                }
            ),
        ],
        idempotency_key: Key = None,
    ) -> Response[CommandAccepted]:
        return await run_command(
            request,
            runtime,
            "tasks.create",
            runtime.chronicle.work.create_task,
            project_id,
            data.title,
            data.description,
            data.priority,
            data.due_date,
            data.assignee_id,
            status=201,
            idempotency_key=idempotency_key,
        )


class TaskCommands(Controller):
    path = "/v1/tasks/{task_id:uuid}"
    tags = ["commands"]
    dependencies = RUNTIME

    @post(
        "/edit",
        operation_id="EditTask",
        summary="Edit a task's title, description, priority or due date",
        status_code=200,
        responses=command(403, 404, 409, 412),
        response_headers=COMMAND_HEADERS,
    )
    async def edit(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        task_id: uuid.UUID,
        data: Annotated[EditTaskBody, example({"title": "Write the README and the changelog", "due_date": None})],
        if_match: IfMatch = None,
        idempotency_key: Key = None,
    ) -> Response[CommandAccepted]:
        changes = data.changes()
        if not changes:
            raise Invalid("send at least one of title, description, priority, due_date", field="body")
        return await run_command(
            request,
            runtime,
            "tasks.edit",
            runtime.chronicle.work.edit_task,
            task_id,
            changes,
            expected_version(if_match),
            idempotency_key=idempotency_key,
        )

    @post(
        "/assign",
        operation_id="AssignTask",
        summary="Assign a task to a member of its project",
        status_code=200,
        responses=command(403, 404, 409, 412),
        response_headers=COMMAND_HEADERS,
    )
    async def assign(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        task_id: uuid.UUID,
        data: Annotated[AssignTaskBody, example({"assignee_id": "9612e03a-5b1c-4c8e-9d0f-2a7b3c4d5e6f"})],
        if_match: IfMatch = None,
        idempotency_key: Key = None,
    ) -> Response[CommandAccepted]:
        return await run_command(
            request,
            runtime,
            "tasks.assign",
            runtime.chronicle.work.assign_task,
            task_id,
            data.assignee_id,
            expected_version(if_match),
            idempotency_key=idempotency_key,
        )

    @post(
        "/unassign",
        operation_id="UnassignTask",
        summary="Unassign a task",
        status_code=200,
        responses=command(403, 404, 409, 412),
        response_headers=COMMAND_HEADERS,
    )
    async def unassign(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        task_id: uuid.UUID,
        if_match: IfMatch = None,
        idempotency_key: Key = None,
    ) -> Response[CommandAccepted]:
        return await run_command(
            request,
            runtime,
            "tasks.unassign",
            runtime.chronicle.work.unassign_task,
            task_id,
            expected_version(if_match),
            idempotency_key=idempotency_key,
        )

    @post(
        "/start",
        operation_id="StartTask",
        summary="Start a task",
        status_code=200,
        responses=command(403, 404, 409, 412),
        response_headers=COMMAND_HEADERS,
    )
    async def start(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        task_id: uuid.UUID,
        if_match: IfMatch = None,
        idempotency_key: Key = None,
    ) -> Response[CommandAccepted]:
        return await run_command(
            request,
            runtime,
            "tasks.start",
            runtime.chronicle.work.start_task,
            task_id,
            expected_version(if_match),
            idempotency_key=idempotency_key,
        )

    @post(
        "/complete",
        operation_id="CompleteTask",
        summary="Complete a task",
        status_code=200,
        responses=command(403, 404, 409, 412),
        response_headers=COMMAND_HEADERS,
    )
    async def complete(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        task_id: uuid.UUID,
        if_match: IfMatch = None,
        idempotency_key: Key = None,
    ) -> Response[CommandAccepted]:
        return await run_command(
            request,
            runtime,
            "tasks.complete",
            runtime.chronicle.work.complete_task,
            task_id,
            expected_version(if_match),
            idempotency_key=idempotency_key,
        )

    @post(
        "/reopen",
        operation_id="ReopenTask",
        summary="Reopen a done task",
        status_code=200,
        responses=command(403, 404, 409, 412),
        response_headers=COMMAND_HEADERS,
    )
    async def reopen(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        task_id: uuid.UUID,
        if_match: IfMatch = None,
        idempotency_key: Key = None,
    ) -> Response[CommandAccepted]:
        return await run_command(
            request,
            runtime,
            "tasks.reopen",
            runtime.chronicle.work.reopen_task,
            task_id,
            expected_version(if_match),
            idempotency_key=idempotency_key,
        )

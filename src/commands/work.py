"""Work's write side: projects and tasks. Each command loads, checks who may act, checks the
caller's expected version, decides, and records. A project or task the caller may not see is
unknown to them (404), as the query routes answer."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import date
from typing import Any, ClassVar

from commands.base import (
    ChronicleApplication,
    CommandResult,
    Context,
    FactoryMaker,
    KeyRecorded,
    check_version,
    command,
)
from domain import access
from domain.errors import Forbidden, Invalid, NotFound
from domain.work import Priority, Project, Task


class WorkApplication(ChronicleApplication):
    name = "work"
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {Task: 100, Project: 100}

    def __init__(
        self,
        make_factory: FactoryMaker,
        *,
        user_exists: Callable[[uuid.UUID], bool],
        key_recorded: KeyRecorded | None = None,
    ) -> None:
        super().__init__(make_factory, key_recorded=key_recorded)
        self.user_exists = user_exists

    # projects

    @command
    def create_project(self, ctx: Context, name: str, description: str | None) -> CommandResult:
        project = Project.create(name, description, ctx.authenticated().user_id)
        return self.record(ctx, project, result_of=project)

    @command
    def rename_project(
        self, ctx: Context, project_id: uuid.UUID, name: str, expected_version: int | None = None
    ) -> CommandResult:
        project = self._managed_project(ctx, project_id, expected_version)
        project.rename(name)
        return self.record(ctx, project, result_of=project)

    @command
    def archive_project(
        self, ctx: Context, project_id: uuid.UUID, expected_version: int | None = None
    ) -> CommandResult:
        project = self._managed_project(ctx, project_id, expected_version)
        project.archive()
        return self.record(ctx, project, result_of=project)

    @command
    def add_member(
        self, ctx: Context, project_id: uuid.UUID, user_id: uuid.UUID, expected_version: int | None = None
    ) -> CommandResult:
        project = self._managed_project(ctx, project_id, expected_version)
        if not self.user_exists(user_id):
            raise Invalid(f"user {user_id} does not exist", field="user_id")
        project.add_member(user_id)
        return self.record(ctx, project, result_of=project)

    @command
    def remove_member(
        self, ctx: Context, project_id: uuid.UUID, user_id: uuid.UUID, expected_version: int | None = None
    ) -> CommandResult:
        project = self._managed_project(ctx, project_id, expected_version)
        project.remove_member(user_id)
        return self.record(ctx, project, result_of=project)

    # tasks

    @command
    def create_task(
        self,
        ctx: Context,
        project_id: uuid.UUID,
        title: str,
        description: str | None = None,
        priority: Priority | None = None,
        due_date: date | None = None,
        assignee_id: uuid.UUID | None = None,
    ) -> CommandResult:
        project = self._member_project(ctx, project_id)
        task = Task.create(project, title, description, priority, due_date, ctx.authenticated().user_id)
        if assignee_id is not None:
            task.assign(project, assignee_id)
        return self.record(ctx, task, result_of=task, depends_on=[project])

    @command
    def edit_task(
        self, ctx: Context, task_id: uuid.UUID, changes: dict[str, Any], expected_version: int | None = None
    ) -> CommandResult:
        task, project = self._task(ctx, task_id, expected_version)
        task.edit(project, **changes)
        return self.record(ctx, task, result_of=task, depends_on=[project])

    @command
    def assign_task(
        self, ctx: Context, task_id: uuid.UUID, assignee_id: uuid.UUID, expected_version: int | None = None
    ) -> CommandResult:
        task, project = self._task(ctx, task_id, expected_version)
        task.assign(project, assignee_id)
        return self.record(ctx, task, result_of=task, depends_on=[project])

    @command
    def unassign_task(self, ctx: Context, task_id: uuid.UUID, expected_version: int | None = None) -> CommandResult:
        task, project = self._task(ctx, task_id, expected_version)
        task.unassign(project)
        return self.record(ctx, task, result_of=task, depends_on=[project])

    @command
    def start_task(self, ctx: Context, task_id: uuid.UUID, expected_version: int | None = None) -> CommandResult:
        task, project = self._task(ctx, task_id, expected_version)
        task.start(project)
        return self.record(ctx, task, result_of=task, depends_on=[project])

    @command
    def complete_task(self, ctx: Context, task_id: uuid.UUID, expected_version: int | None = None) -> CommandResult:
        task, project = self._task(ctx, task_id, expected_version)
        task.complete(project)
        return self.record(ctx, task, result_of=task, depends_on=[project])

    @command
    def reopen_task(self, ctx: Context, task_id: uuid.UUID, expected_version: int | None = None) -> CommandResult:
        task, project = self._task(ctx, task_id, expected_version)
        task.reopen(project)
        return self.record(ctx, task, result_of=task, depends_on=[project])

    def load_task(self, task_id: uuid.UUID, *, fresh: bool = False) -> Task:
        return self.load(Task, task_id, "task", for_update=False, fresh=fresh)

    # who may act

    def _managed_project(self, ctx: Context, project_id: uuid.UUID, expected_version: int | None) -> Project:
        """Renaming, archiving and membership: the owner, managers and admins."""
        actor = ctx.authenticated()
        project = self.load(Project, project_id, "project")
        if not access.may_see_project(actor, is_member=project.is_member(actor.user_id)):
            raise NotFound(f"project {project_id} not found")
        if not access.may_manage_project(actor, owner_id=project.owner_id):
            raise Forbidden("only the project's owner, a manager or an admin may do this")
        check_version(project, expected_version)
        return project

    def _member_project(self, ctx: Context, project_id: uuid.UUID) -> Project:
        """Tasks: members of the project, managers and admins."""
        actor = ctx.authenticated()
        project = self.load(Project, project_id, "project", for_update=False)
        if not access.may_see_project(actor, is_member=project.is_member(actor.user_id)):
            raise NotFound(f"project {project_id} not found")
        return project

    def _task(self, ctx: Context, task_id: uuid.UUID, expected_version: int | None) -> tuple[Task, Project]:
        task = self.load(Task, task_id, "task")
        try:
            project = self._member_project(ctx, task.project_id)
        except NotFound:
            raise NotFound(f"task {task_id} not found") from None
        check_version(task, expected_version)
        return task, project

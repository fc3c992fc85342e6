"""Work: projects, their members, and tasks.

A task's rules that depend on its project (archived projects are frozen, assignees must be
members) take the project as an argument: the command handler loads both.
"""

from __future__ import annotations

import uuid
from datetime import date
from enum import StrEnum
from typing import Any

from eventsourcing.domain import Aggregate, event

from domain.errors import Conflict, Invalid
from domain.identity import clean_name
from domain.text import check_text

MAX_TITLE = 200
MAX_DESCRIPTION = 10_000


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class TaskStatus(StrEnum):
    TODO = "todo"
    IN_PROGRESS = "in_progress"
    DONE = "done"


def clean_description(description: str | None) -> str:
    text = check_text((description or "").strip(), "description", multiline=True)
    if len(text) > MAX_DESCRIPTION:
        raise Invalid(f"description must be at most {MAX_DESCRIPTION} characters", field="description")
    return text


class Project(Aggregate):
    """A body of work. Its creator owns it and is its first member."""

    class Created(Aggregate.Created):
        name: str
        description: str
        owner_id: uuid.UUID

    @event(Created)
    def __init__(self, name: str, description: str, owner_id: uuid.UUID) -> None:
        self.name = name
        self.description = description
        self.owner_id = owner_id
        self.members: set[uuid.UUID] = {owner_id}
        self.archived = False

    @classmethod
    def create(cls, name: str, description: str | None, owner_id: uuid.UUID) -> Project:
        return cls(clean_name(name), clean_description(description), owner_id)

    def is_member(self, user_id: uuid.UUID) -> bool:
        return user_id in self.members

    def check_active(self) -> None:
        if self.archived:
            raise Conflict("the project is archived")

    def rename(self, name: str) -> None:
        self.check_active()
        name = clean_name(name)
        if name != self.name:
            self._renamed(name=name)

    class Renamed(Aggregate.Event):
        name: str

    @event(Renamed)
    def _renamed(self, name: str) -> None:
        self.name = name

    def archive(self) -> None:
        self.check_active()
        self._archived()

    class Archived(Aggregate.Event):
        pass

    @event(Archived)
    def _archived(self) -> None:
        self.archived = True

    def add_member(self, user_id: uuid.UUID) -> None:
        self.check_active()
        if user_id in self.members:
            raise Conflict("the user is already a member of the project")
        self._member_added(user_id=user_id)

    class MemberAdded(Aggregate.Event):
        user_id: uuid.UUID

    @event(MemberAdded)
    def _member_added(self, user_id: uuid.UUID) -> None:
        self.members.add(user_id)

    def remove_member(self, user_id: uuid.UUID) -> None:
        self.check_active()
        if user_id == self.owner_id:
            raise Invalid("the owner cannot be removed from the project", field="user_id")
        if user_id not in self.members:
            raise Conflict("the user is not a member of the project")
        self._member_removed(user_id=user_id)

    class MemberRemoved(Aggregate.Event):
        user_id: uuid.UUID

    @event(MemberRemoved)
    def _member_removed(self, user_id: uuid.UUID) -> None:
        self.members.discard(user_id)


class Task(Aggregate):
    """A unit of work in a project: todo -> in_progress -> done, and back by reopening."""

    class Created(Aggregate.Created):
        project_id: uuid.UUID
        title: str
        description: str
        priority: Priority
        due_date: date | None
        created_by: uuid.UUID

    @event(Created)
    def __init__(
        self,
        project_id: uuid.UUID,
        title: str,
        description: str,
        priority: Priority,
        due_date: date | None,
        created_by: uuid.UUID,
    ) -> None:
        self.project_id = project_id
        self.title = title
        self.description = description
        self.priority = Priority(priority)
        self.due_date = due_date
        self.created_by = created_by
        self.assignee_id: uuid.UUID | None = None
        self.status = TaskStatus.TODO

    @classmethod
    def create(
        cls,
        project: Project,
        title: str,
        description: str | None,
        priority: Priority | None,
        due_date: date | None,
        created_by: uuid.UUID,
    ) -> Task:
        project.check_active()
        return cls(
            project.id,
            clean_title(title),
            clean_description(description),
            Priority(priority or Priority.NORMAL),
            due_date,
            created_by,
        )

    def edit(self, project: Project, **changes: Any) -> None:
        """Changes any of title, description, priority and due_date; a field absent is kept,
        `due_date=None` clears the due date. Changing nothing records nothing."""
        project.check_active()
        unknown = set(changes) - {"title", "description", "priority", "due_date"}
        if unknown:
            raise Invalid(f"cannot edit {', '.join(sorted(unknown))}", field=sorted(unknown)[0])
        cleaned = {key: _clean_edit(key, value) for key, value in changes.items()}
        differing = {key: value for key, value in cleaned.items() if getattr(self, key) != value}
        if "due_date" in differing and differing["due_date"] is None:
            del differing["due_date"]
            differing["due_date_cleared"] = True
        if differing:
            self._edited(**differing)

    class Edited(Aggregate.Event):
        """The fields that changed; a field left `None` did not change. `due_date_cleared` says the
        due date was removed (a `None` due date alone means "unchanged").

        Version 1 (stored before these fields existed) carried one `changes` dict with any of the
        same keys, `due_date: None` meaning cleared; `upcast_v1_v2` reads it into this shape. The
        upcaster only moves keys, so it serves projections reading the plain JSON too."""

        title: str | None = None
        description: str | None = None
        priority: Priority | None = None
        due_date: date | None = None
        due_date_cleared: bool = False

        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            changes = state.pop("changes")
            for key in ("title", "description", "priority", "due_date"):
                state[key] = changes.get(key)
            state["due_date_cleared"] = "due_date" in changes and changes["due_date"] is None

    @event(Edited)
    def _edited(
        self,
        title: str | None = None,
        description: str | None = None,
        priority: Priority | None = None,
        due_date: date | None = None,
        due_date_cleared: bool = False,
    ) -> None:
        if title is not None:
            self.title = title
        if description is not None:
            self.description = description
        if priority is not None:
            self.priority = Priority(priority)
        if due_date is not None:
            self.due_date = date.fromisoformat(due_date) if isinstance(due_date, str) else due_date
        elif due_date_cleared:
            self.due_date = None

    def assign(self, project: Project, assignee_id: uuid.UUID) -> None:
        project.check_active()
        if not project.is_member(assignee_id):
            raise Invalid("the assignee must be a member of the project", field="assignee_id")
        if self.assignee_id == assignee_id:
            raise Conflict("the task is already assigned to that user")
        self._assigned(assignee_id=assignee_id)

    class Assigned(Aggregate.Event):
        assignee_id: uuid.UUID

    @event(Assigned)
    def _assigned(self, assignee_id: uuid.UUID) -> None:
        self.assignee_id = assignee_id

    def unassign(self, project: Project) -> None:
        project.check_active()
        if self.assignee_id is None:
            raise Conflict("the task is not assigned")
        self._unassigned()

    class Unassigned(Aggregate.Event):
        pass

    @event(Unassigned)
    def _unassigned(self) -> None:
        self.assignee_id = None

    def start(self, project: Project) -> None:
        project.check_active()
        if self.status is TaskStatus.IN_PROGRESS:
            raise Conflict("the task is already in progress")
        if self.status is TaskStatus.DONE:
            raise Conflict("the task is done; reopen it first")
        self._started()

    class Started(Aggregate.Event):
        pass

    @event(Started)
    def _started(self) -> None:
        self.status = TaskStatus.IN_PROGRESS

    def complete(self, project: Project) -> None:
        project.check_active()
        if self.status is TaskStatus.DONE:
            raise Conflict("the task is already done")
        self._completed()

    class Completed(Aggregate.Event):
        pass

    @event(Completed)
    def _completed(self) -> None:
        self.status = TaskStatus.DONE

    def reopen(self, project: Project) -> None:
        project.check_active()
        if self.status is not TaskStatus.DONE:
            raise Conflict("only a done task can be reopened")
        self._reopened()

    class Reopened(Aggregate.Event):
        pass

    @event(Reopened)
    def _reopened(self) -> None:
        self.status = TaskStatus.TODO


def clean_title(title: str) -> str:
    return clean_name(title, field="title", limit=MAX_TITLE)


def _clean_edit(key: str, value: Any) -> Any:
    match key:
        case "title":
            return clean_title(value)
        case "description":
            return clean_description(value)
        case "priority":
            try:
                return Priority(value)
            except ValueError:
                raise Invalid(f"priority must be one of {', '.join(Priority)}", field="priority") from None
        case _:
            return value

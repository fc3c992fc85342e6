"""TaskBoard (Redis): per project, how many tasks are in each status, and per assignee per status."""

from __future__ import annotations

from typing import Any

from domain.work import Project, Task
from infra.eventstore.envelope import EventEnvelope
from projections.base import RedisProjection, RedisView
from projections.events import event_class, handled

UNASSIGNED = "none"
PROJECT_EVENTS = handled(Project.Created, Project.MemberAdded, Project.MemberRemoved)
STATUS_AFTER: dict[type[Any], str] = {Task.Started: "in_progress", Task.Completed: "done", Task.Reopened: "todo"}


class TaskBoard(RedisProjection):
    name = "task_board"
    version = 1
    description = (
        "board:<project> counts per status and per assignee and status; members:<project>, who may read the board"
    )
    handles = handled(
        Project.Created,
        Project.MemberAdded,
        Project.MemberRemoved,
        Task.Created,
        Task.Assigned,
        Task.Unassigned,
        Task.Started,
        Task.Completed,
        Task.Reopened,
    )

    def reads(self, event: EventEnvelope) -> list[str]:
        return [] if event.type in PROJECT_EVENTS else [f"task:{event.stream_id}"]

    def apply(self, event: EventEnvelope, view: RedisView) -> None:
        kind = event_class(event)
        match kind:
            case Project.Created:
                view.sadd(f"members:{event.stream_id}", str(event.data["owner_id"]))
                return
            case Project.MemberAdded:
                view.sadd(f"members:{event.stream_id}", str(event.data["user_id"]))
                return
            case Project.MemberRemoved:
                view.srem(f"members:{event.stream_id}", str(event.data["user_id"]))
                return
            case _:
                pass  # a task's event: below
        key = f"task:{event.stream_id}"
        if kind is Task.Created:
            project = str(event.data["project_id"])
            view.hset(key, {"project": project, "status": "todo", "assignee": UNASSIGNED})
            self._count(view, project, "todo", UNASSIGNED, +1)
            view.hincrby(f"board:{project}", "total", 1)
            return
        task = view.hash(key)
        if not task:
            return  # a task this view never saw created cannot be moved (never happens in order)
        project, status, assignee = task["project"], task["status"], task["assignee"]
        match kind:
            case Task.Assigned | Task.Unassigned:
                new = str(event.data["assignee_id"]) if kind is Task.Assigned else UNASSIGNED
                view.hincrby(f"board:{project}", f"assignee:{assignee}:{status}", -1)
                view.hincrby(f"board:{project}", f"assignee:{new}:{status}", 1)
                view.hset(key, {"assignee": new})
            case Task.Started | Task.Completed | Task.Reopened:
                new = STATUS_AFTER[kind]
                self._count(view, project, status, assignee, -1)
                self._count(view, project, new, assignee, +1)
                view.hset(key, {"status": new})
            case _:
                pass  # not one of `handles`: the projector never sends it

    @staticmethod
    def _count(view: RedisView, project: str, status: str, assignee: str, delta: int) -> None:
        view.hincrby(f"board:{project}", f"status:{status}", delta)
        view.hincrby(f"board:{project}", f"assignee:{assignee}:{status}", delta)


# -- queries ------------------------------------------------------------------------------------------
# `prefix` is the live version's key prefix (the API's LiveVersions knows it).

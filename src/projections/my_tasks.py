"""MyTasks (Redis): per user, the open (not done) tasks assigned to them, oldest first; its size
is the user's open task count."""

from __future__ import annotations

import uuid
from typing import Any

import redis.asyncio as aioredis

from domain.work import Task
from infra.eventstore.envelope import EventEnvelope
from projections.base import RedisProjection, RedisView, when
from projections.events import event_class, handled


class MyTasks(RedisProjection):
    name = "my_tasks"
    version = 1
    description = "open:<user> sorted set of open assigned task ids (score: created time)"
    handles = handled(Task.Created, Task.Assigned, Task.Unassigned, Task.Completed, Task.Reopened)

    def reads(self, event: EventEnvelope) -> list[str]:
        return [f"task:{event.stream_id}"]

    def apply(self, event: EventEnvelope, view: RedisView) -> None:
        key, task_id = f"task:{event.stream_id}", str(event.stream_id)
        kind = event_class(event)
        if kind is Task.Created:
            view.hset(key, {"assignee": "", "done": 0, "created": when(event).timestamp()})
            return
        task = view.hash(key)
        if not task:
            return
        assignee, done, created = task["assignee"], task["done"] == "1", float(task["created"])
        match kind:
            case Task.Assigned:
                new = str(event.data["assignee_id"])
                if assignee:
                    view.zrem(f"open:{assignee}", task_id)
                if not done:
                    view.zadd(f"open:{new}", task_id, created)
                view.hset(key, {"assignee": new})
            case Task.Unassigned:
                if assignee:
                    view.zrem(f"open:{assignee}", task_id)
                view.hset(key, {"assignee": ""})
            case Task.Completed:
                if assignee:
                    view.zrem(f"open:{assignee}", task_id)
                view.hset(key, {"done": 1})
            case Task.Reopened:
                if assignee:
                    view.zadd(f"open:{assignee}", task_id, created)
                view.hset(key, {"done": 0})
            case _:
                pass  # not one of `handles`: the projector never sends it


# -- queries ------------------------------------------------------------------------------------------
# `prefix` is the live version's key prefix (the API's LiveVersions knows it). The tasks' fields, and
# whether the caller may still see each task's project, are the task list's
# (`projections.tasks.visible_tasks_in_order`).


async def open_task_ids(redis: aioredis.Redis, prefix: str, user_id: uuid.UUID) -> list[str]:
    """The ids of the open tasks assigned to the user, oldest first, as the view keeps them (text:
    a user with hundreds of tasks would cost a millisecond in `UUID` objects). One round trip."""
    members: list[Any] = await redis.zrange(f"{prefix}open:{user_id}", 0, -1)
    return [m.decode() for m in members]

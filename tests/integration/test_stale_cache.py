"""Two processes' caches disagree with the log: every command still decides on the truth.

Two bootstraps over one database stand for two API processes, each with its own aggregate cache."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from commands.base import Actor, Context
from domain.errors import Conflict
from domain.identity import Role
from domain.work import TaskStatus
from infra.bootstrap import Chronicle, bootstrap
from infra.settings import Settings


@pytest.fixture
def two(settings: Settings) -> Iterator[tuple[Chronicle, Chronicle, Context]]:
    a, b = bootstrap(settings), bootstrap(settings)
    owner = a.identity.register(Context("t"), f"{uuid.uuid4().hex[:8]}@example.com", "Owner", "long enough pw")
    yield a, b, Context("tests", actor=Actor(owner.id, frozenset({Role.MEMBER})))
    a.close()
    b.close()


def test_a_stale_cached_aggregate_does_not_lose_or_double_a_write(two: tuple[Chronicle, Chronicle, Context]) -> None:
    a, b, ctx = two
    project = a.work.create_project(ctx, "P", None).id
    task = a.work.create_task(ctx, project, "v1").id
    a.work.edit_task(ctx, task, {"title": "by a"})  # a caches the task at version 2
    b.work.edit_task(ctx, task, {"title": "by b"})  # b appends version 3
    result = a.work.edit_task(ctx, task, {"title": "by a again"})  # a's cache says version 2
    assert result.version == 4
    assert b.work.load_task(task, fresh=True).title == "by a again"


def test_a_stale_cached_dependency_is_caught_by_the_append_guard(two: tuple[Chronicle, Chronicle, Context]) -> None:
    a, b, ctx = two
    project = a.work.create_project(ctx, "P", None).id
    task = a.work.create_task(ctx, project, "t").id  # a caches the project as active
    b.work.archive_project(ctx, project)
    with pytest.raises(Conflict, match="archived"):
        a.work.start_task(ctx, task)
    assert a.work.load_task(task, fresh=True).status is TaskStatus.TODO


def test_a_refusal_decided_on_stale_state_is_decided_again(two: tuple[Chronicle, Chronicle, Context]) -> None:
    a, b, ctx = two
    project = a.work.create_project(ctx, "P", None).id
    task = a.work.create_task(ctx, project, "t").id
    a.work.complete_task(ctx, task)  # a caches "done"
    b.work.reopen_task(ctx, task)
    assert a.work.complete_task(ctx, task).version == 4  # a's cache would refuse: "already done"
    b.work.reopen_task(ctx, task)
    assert a.work.start_task(ctx, task, expected_version=5).version == 6  # a's cache says version 4

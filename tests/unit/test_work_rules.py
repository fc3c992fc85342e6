"""The rules of projects and tasks: given state, when a command, then events or an error."""

from __future__ import annotations

import uuid
from datetime import date

from domain.errors import Conflict, Invalid
from domain.work import Priority, Project, Task, TaskStatus
from tests.unit.specs import given, raises

OWNER, ALICE, BOB = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


def project(*members: uuid.UUID, archived: bool = False) -> Project:
    p = Project.create("Apollo", None, OWNER)
    for m in members:
        p.add_member(m)
    if archived:
        p.archive()
    return p


def task(p: Project, **kwargs: object) -> Task:
    return Task.create(p, kwargs.pop("title", "Build it"), None, None, None, OWNER)  # type: ignore[arg-type]


def test_creating_a_project_makes_the_creator_its_owner_and_member() -> None:
    p = Project.create("  Apollo   program ", "  moon ", OWNER)
    assert (p.name, p.description, p.owner_id, p.members, p.archived) == (
        "Apollo program",
        "moon",
        OWNER,
        {OWNER},
        False,
    )
    with raises(Invalid):
        Project.create("   ", None, OWNER)
    with raises(Invalid):
        Project.create("x" * 121, None, OWNER)


def test_renaming() -> None:
    given(project()).when(lambda p: p.rename("Artemis")).then("Renamed", name="Artemis")
    given(project()).when(lambda p: p.rename("Apollo")).then_nothing()
    given(project(archived=True)).when(lambda p: p.rename("Artemis")).rejected(Conflict, "archived")
    given(project()).when(lambda p: p.rename("")).rejected(Invalid, field="name")


def test_archiving() -> None:
    given(project()).when(lambda p: p.archive()).then("Archived")
    given(project(archived=True)).when(lambda p: p.archive()).rejected(Conflict, "archived")


def test_membership() -> None:
    given(project()).when(lambda p: p.add_member(ALICE)).then("MemberAdded", user_id=ALICE)
    given(project(ALICE)).when(lambda p: p.add_member(ALICE)).rejected(Conflict, "already a member")
    given(project(ALICE)).when(lambda p: p.remove_member(ALICE)).then("MemberRemoved", user_id=ALICE)
    given(project()).when(lambda p: p.remove_member(ALICE)).rejected(Conflict, "not a member")
    given(project()).when(lambda p: p.remove_member(OWNER)).rejected(Invalid, "owner", field="user_id")
    given(project(archived=True)).when(lambda p: p.add_member(ALICE)).rejected(Conflict, "archived")


def test_creating_a_task() -> None:
    p = project()
    t = Task.create(p, " Build  it ", "desc", Priority.HIGH, date(2027, 1, 1), ALICE)
    assert (t.title, t.description, t.priority, t.due_date, t.status, t.assignee_id) == (
        "Build it",
        "desc",
        Priority.HIGH,
        date(2027, 1, 1),
        TaskStatus.TODO,
        None,
    )
    assert Task.create(p, "t", None, None, None, ALICE).priority is Priority.NORMAL
    with raises(Conflict):
        Task.create(project(archived=True), "t", None, None, None, ALICE)
    with raises(Invalid):
        Task.create(p, "x" * 201, None, None, None, ALICE)


def test_editing_a_task() -> None:
    p = project()
    given(task(p)).when(lambda t: t.edit(p, title="New", priority="urgent")).then("Edited")
    given(task(p)).when(lambda t: t.edit(p, title="Build it")).then_nothing()
    given(task(p)).when(lambda t: t.edit(p, due_date=date(2027, 5, 1))).then("Edited")
    given(task(p), lambda t: t.edit(p, due_date=date(2027, 5, 1))).when(lambda t: t.edit(p, due_date=None)).then(
        "Edited"
    )
    given(task(p)).when(lambda t: t.edit(p, priority="asap")).rejected(Invalid, field="priority")
    given(task(p)).when(lambda t: t.edit(p, title=" ")).rejected(Invalid, field="title")
    given(task(p)).when(lambda t: t.edit(p, status="done")).rejected(Invalid, field="status")
    archived = project()
    given(task(archived), lambda _: archived.archive()).when(lambda t: t.edit(archived, title="x")).rejected(Conflict)


def test_assigning_a_task() -> None:
    p = project(ALICE)
    given(task(p)).when(lambda t: t.assign(p, ALICE)).then("Assigned", assignee_id=ALICE)
    given(task(p)).when(lambda t: t.assign(p, BOB)).rejected(Invalid, "member", field="assignee_id")
    given(task(p), lambda t: t.assign(p, ALICE)).when(lambda t: t.assign(p, ALICE)).rejected(Conflict)
    given(task(p), lambda t: t.assign(p, ALICE)).when(lambda t: t.assign(p, OWNER)).then("Assigned")
    given(task(p), lambda t: t.assign(p, ALICE)).when(lambda t: t.unassign(p)).then("Unassigned")
    given(task(p)).when(lambda t: t.unassign(p)).rejected(Conflict, "not assigned")


def test_task_status_moves() -> None:
    p = project()
    given(task(p)).when(lambda t: t.start(p)).then("Started")
    given(task(p), lambda t: t.start(p)).when(lambda t: t.start(p)).rejected(Conflict, "in progress")
    given(task(p)).when(lambda t: t.complete(p)).then("Completed")
    given(task(p), lambda t: t.start(p)).when(lambda t: t.complete(p)).then("Completed")
    given(task(p), lambda t: t.complete(p)).when(lambda t: t.complete(p)).rejected(Conflict, "already done")
    given(task(p), lambda t: t.complete(p)).when(lambda t: t.start(p)).rejected(Conflict, "reopen")
    given(task(p), lambda t: t.complete(p)).when(lambda t: t.reopen(p)).then("Reopened")
    given(task(p)).when(lambda t: t.reopen(p)).rejected(Conflict, "only a done task")

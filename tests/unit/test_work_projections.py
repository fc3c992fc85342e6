"""Each work and identity projection's `apply`, on representative events, through the projector's
buffered views: the rows and keys it writes."""

from __future__ import annotations

import uuid
from datetime import date

from domain.identity import Role, User
from domain.work import Priority, Project, Task
from projections.board import TaskBoard
from projections.my_tasks import MyTasks
from projections.projects import ProjectCatalog
from projections.tasks import TaskList
from projections.users import UserDirectory
from tests.unit.views import Add, Log, apply_redis, apply_sql, at, commands, increments

OWNER, ALICE = uuid.uuid4(), uuid.uuid4()
HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"


def test_user_directory_keeps_who_is_who_and_never_the_password_hash() -> None:
    log, user = Log(), User.register("Ada@Example.com", "Ada  Lovelace", HASH)
    (registered,) = log.record(user)
    user.grant(Role.MANAGER)
    user.revoke(Role.MANAGER)
    user.change_password_hash(HASH + "2")
    granted, revoked, rehashed = log.record(user)
    first = apply_sql(UserDirectory(), [registered])
    assert first.row("users") == {
        "id": user.id,
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "roles": ["member"],
        "registered_at": at(registered),
        "version": 1,
        "erased": False,
    }
    later = apply_sql(UserDirectory(), [granted, revoked, rehashed])
    assert later.updated["users"] == {(user.id,): {"version": 4}}
    assert later.raw == [
        (
            "UPDATE users SET roles = CASE WHEN %s = ANY(roles) THEN roles ELSE array_append(roles, %s) END"
            " WHERE id = %s",
            ("manager", "manager", user.id),
        ),
        ("UPDATE users SET roles = array_remove(roles, %s) WHERE id = %s", ("manager", user.id)),
    ]
    assert "argon2" not in repr((first, later))


def test_user_directory_forgets_an_erased_users_name_and_email() -> None:
    log, user = Log(), User.register("grace@example.com", "Grace", HASH)
    log.record(user)
    user.erase()
    (erased,) = log.record(user)
    view = apply_sql(UserDirectory(), [erased])
    assert view.updated["users"] == {(user.id,): {"name": None, "email": None, "erased": True, "version": 2}}


def test_project_catalog_counts_tasks_and_keeps_members() -> None:
    log, projection = Log(), ProjectCatalog()
    project = Project.create("Apollo", "moon", OWNER)
    created = log.record(project)
    project.add_member(ALICE)
    project.rename("Artemis")
    added, renamed = log.record(project)
    first = apply_sql(projection, created)
    assert first.row("projects") == {
        "id": project.id,
        "name": "Apollo",
        "description": "moon",
        "owner_id": OWNER,
        "archived": False,
        "task_count": 0,
        "done_count": 0,
        "created_at": at(created[0]),
        "updated_at": at(created[0]),
        "version": 1,
    }
    assert first.inserted["members"] == [{"user_id": OWNER, "project_id": project.id}]
    second = apply_sql(projection, [added, renamed])
    assert second.inserted["members"] == [{"user_id": ALICE, "project_id": project.id}]
    assert second.updated["projects"] == {(project.id,): {"updated_at": at(renamed), "version": 3, "name": "Artemis"}}

    task = Task.create(project, "Build it", None, None, None, OWNER)
    made = log.record(task)
    task.complete(project)
    task.reopen(project)
    task.complete(project)
    moved = log.record(task)
    counted = apply_sql(projection, [*made, *moved])
    assert counted.inserted["task_projects"] == [{"task_id": task.id, "project_id": project.id}]
    assert counted.updated["projects"] == {(project.id,): {"task_count": Add(1), "done_count": Add(1)}}
    project.remove_member(ALICE)
    assert apply_sql(projection, log.record(project)).deleted == {"members": [(ALICE, project.id)]}


def test_project_catalog_finds_a_tasks_project_in_its_view_when_it_does_not_remember_it() -> None:
    log = Log()
    project = Project.create("Apollo", None, OWNER)
    task = Task.create(project, "Build it", None, None, None, OWNER)
    log.record(project, task)
    task.complete(project)
    after_a_restart = apply_sql(ProjectCatalog(), log.record(task))
    assert after_a_restart.updated == {}
    assert after_a_restart.raw == [
        (
            "UPDATE projects SET done_count = done_count + %s WHERE id ="
            " (SELECT project_id FROM task_projects WHERE task_id = %s)",
            (1, task.id),
        )
    ]


def test_task_list_keeps_every_field_of_a_task() -> None:
    log, projection = Log(), TaskList()
    project = Project.create("Apollo", None, OWNER)
    project.add_member(ALICE)
    task = Task.create(project, "Build it", "  with care ", Priority.HIGH, date(2027, 1, 5), OWNER)
    log.record(project)
    (created,) = log.record(task)
    assert apply_sql(projection, [created]).row("tasks") == {
        "id": task.id,
        "project_id": project.id,
        "title": "Build it",
        "description": "with care",
        "priority": "high",
        "priority_rank": 2,
        "due_date": date(2027, 1, 5),
        "due_sort": date(2027, 1, 5),
        "status": "todo",
        "assignee_id": None,
        "created_by": OWNER,
        "created_at": at(created),
        "updated_at": at(created),
        "completed_at": None,
        "version": 1,
    }
    task.edit(project, title="Build it well", priority="urgent", due_date=None)
    task.assign(project, ALICE)
    task.start(project)
    edited, assigned, started = log.record(task)
    assert apply_sql(projection, [edited]).updated["tasks"] == {
        (task.id,): {
            "title": "Build it well",
            "priority": "urgent",
            "priority_rank": 3,
            "due_date": None,
            "due_sort": date(9999, 12, 31),
            "updated_at": at(edited),
            "version": 2,
        }
    }
    assert apply_sql(projection, [assigned, started]).updated["tasks"] == {
        (task.id,): {"assignee_id": ALICE, "updated_at": at(started), "version": 4, "status": "in_progress"}
    }
    task.complete(project)
    (completed,) = log.record(task)
    assert apply_sql(projection, [completed]).updated["tasks"][(task.id,)] == {
        "status": "done",
        "completed_at": at(completed),
        "updated_at": at(completed),
        "version": 5,
    }
    task.reopen(project)
    task.unassign(project)
    reopened, unassigned = log.record(task)
    assert apply_sql(projection, [reopened, unassigned]).updated["tasks"][(task.id,)] == {
        "status": "todo",
        "completed_at": None,
        "updated_at": at(unassigned),
        "version": 7,
        "assignee_id": None,
    }


def test_task_board_counts_tasks_per_status_and_assignee() -> None:
    log, projection = Log(), TaskBoard()
    project = Project.create("Apollo", None, OWNER)
    project.add_member(ALICE)
    task = Task.create(project, "Build it", None, None, None, OWNER)
    p, t = str(project.id), f"task:{task.id}"
    view = apply_redis(projection, log.record(project, task))
    assert commands(view) == {
        f"members:{p}": [["SADD", *sorted([str(OWNER), str(ALICE)])]],
        t: [["HSET", "project", p, "status", "todo", "assignee", "none"]],
        f"board:{p}": [
            ["HINCRBY", "status:todo", "1"],
            ["HINCRBY", "assignee:none:todo", "1"],
            ["HINCRBY", "total", "1"],
        ],
    }
    task.assign(project, ALICE)
    task.start(project)
    task.complete(project)
    view = apply_redis(projection, log.record(task), {t: view.hash(t)})
    assert view.hash(t) == {"project": p, "status": "done", "assignee": str(ALICE)}
    assert commands(view)[t] == [["HSET", "assignee", str(ALICE), "status", "done"]]
    assert increments(view, f"board:{p}") == {
        "assignee:none:todo": -1,
        "status:todo": -1,
        "status:done": 1,
        f"assignee:{ALICE}:done": 1,
        # Passed through within the batch: they net to 0, and exist as fields as they would unbatched.
        f"assignee:{ALICE}:todo": 0,
        "status:in_progress": 0,
        f"assignee:{ALICE}:in_progress": 0,
    }
    project.remove_member(ALICE)
    assert commands(apply_redis(projection, log.record(project))) == {f"members:{p}": [["SREM", str(ALICE)]]}


def test_task_board_ignores_a_move_of_a_task_it_never_saw_created() -> None:
    log = Log()
    project = Project.create("Apollo", None, OWNER)
    task = Task.create(project, "Build it", None, None, None, OWNER)
    log.record(project, task)
    task.start(project)
    assert commands(apply_redis(TaskBoard(), log.record(task))) == {}


def test_my_tasks_lists_a_users_open_assigned_tasks_oldest_first() -> None:
    log, projection = Log(), MyTasks()
    project = Project.create("Apollo", None, OWNER)
    project.add_member(ALICE)
    task = Task.create(project, "Build it", None, None, None, OWNER)
    log.record(project)
    (created,) = log.record(task)
    t, score = f"task:{task.id}", at(created).timestamp()
    view = apply_redis(projection, [created])
    assert commands(view) == {t: [["HSET", "assignee", "", "done", "0", "created", str(score)]]}
    task.assign(project, ALICE)
    task.complete(project)
    view = apply_redis(projection, log.record(task), {t: view.hash(t)})
    assert commands(view) == {
        f"open:{ALICE}": [["ZREM", str(task.id)]],
        t: [["HSET", "assignee", str(ALICE), "done", "1"]],
    }
    task.reopen(project)
    view = apply_redis(projection, log.record(task), {t: view.hash(t)})
    assert commands(view) == {f"open:{ALICE}": [["ZADD", repr(score), str(task.id)]], t: [["HSET", "done", "0"]]}
    task.assign(project, OWNER)
    task.unassign(project)
    view = apply_redis(projection, log.record(task), {t: view.hash(t)})
    assert commands(view) == {
        f"open:{ALICE}": [["ZREM", str(task.id)]],
        f"open:{OWNER}": [["ZREM", str(task.id)]],
        t: [["HSET", "assignee", ""]],
    }

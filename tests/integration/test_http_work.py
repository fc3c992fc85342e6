"""Work's command routes over HTTP: happy paths, every error status, If-Match, roles and membership."""

from __future__ import annotations

import uuid

import pytest

from tests.integration.http import Api, User, assert_problem


@pytest.fixture
def team(api: Api) -> tuple[User, User, User]:
    """An owner, a member, and an outsider."""
    return api.register("Olivia Owner"), api.register("Mo Member"), api.register("Otto Outsider")


def test_project_lifecycle(api: Api, team: tuple[User, User, User]) -> None:
    owner, member, _ = team
    r = api.post("/v1/projects", {"name": "Apollo", "description": "moon"}, owner)
    assert r.status_code == 201 and r.json()["version"] == 1 and r.headers["etag"] == '"1"'
    project = r.json()["id"]
    r = api.post(f"/v1/projects/{project}/rename", {"name": "Artemis"}, owner, if_match="1")
    assert r.status_code == 200 and r.json()["version"] == 2
    assert_problem(api.post(f"/v1/projects/{project}/rename", {"name": "Gemini"}, owner, if_match="1"), 412)
    assert api.post(f"/v1/projects/{project}/members", {"user_id": str(member.id)}, owner).json()["version"] == 3
    assert_problem(api.post(f"/v1/projects/{project}/members", {"user_id": str(member.id)}, owner), 409)
    assert api.delete(f"/v1/projects/{project}/members/{member.id}", owner).status_code == 200
    assert_problem(api.delete(f"/v1/projects/{project}/members/{member.id}", owner), 409)
    assert_problem(api.delete(f"/v1/projects/{project}/members/{owner.id}", owner), 422, field="user_id")
    assert api.post(f"/v1/projects/{project}/archive", user=owner).status_code == 200
    assert_problem(api.post(f"/v1/projects/{project}/archive", user=owner), 409, says="archived")
    assert_problem(api.post(f"/v1/projects/{project}/rename", {"name": "Late"}, owner), 409, says="archived")


def test_project_commands_reject_bad_input(api: Api, team: tuple[User, User, User]) -> None:
    owner, _, _ = team
    assert_problem(api.post("/v1/projects", {"name": ""}, owner), 422, field="name")
    assert_problem(api.post("/v1/projects", {"name": "x" * 121}, owner), 422, field="name")
    assert_problem(api.post("/v1/projects", {"name": "ok", "colour": "red"}, owner), 422, field="colour")
    assert_problem(api.post("/v1/projects", {}, owner), 422, field="name")
    project = api.project(owner)
    assert_problem(api.post(f"/v1/projects/{project}/members", {"user_id": "not-a-uuid"}, owner), 422, field="user_id")
    assert_problem(
        api.post(f"/v1/projects/{project}/members", {"user_id": str(uuid.uuid4())}, owner), 422, field="user_id"
    )
    assert_problem(api.post(f"/v1/projects/{uuid.uuid4()}/rename", {"name": "x"}, owner), 404)
    assert_problem(api.post("/v1/projects/not-a-uuid/rename", {"name": "x"}, owner), 404)
    assert_problem(api.post(f"/v1/projects/{project}/rename", {"name": "x"}, owner, if_match="abc"), 400)


def test_only_owners_managers_and_admins_manage_a_project_and_outsiders_do_not_see_it(
    api: Api, team: tuple[User, User, User], admin: User
) -> None:
    owner, member, outsider = team
    project = api.project(owner, "Managed", member)
    assert_problem(api.post(f"/v1/projects/{project}/rename", {"name": "Mine now"}, member), 403)
    assert_problem(api.post(f"/v1/projects/{project}/archive", user=outsider), 404)
    assert_problem(api.post(f"/v1/projects/{project}/members", {"user_id": str(outsider.id)}, outsider), 404)
    manager = api.register("Mae Manager")
    assert api.post(f"/v1/users/{manager.id}/roles", {"role": "manager"}, admin).status_code == 200
    manager = api.relogin(manager)
    assert api.post(f"/v1/projects/{project}/rename", {"name": "By a manager"}, manager).status_code == 200
    assert api.post(f"/v1/projects/{project}/members", {"user_id": str(outsider.id)}, admin).status_code == 200


def test_task_lifecycle(api: Api, team: tuple[User, User, User]) -> None:
    owner, member, _ = team
    project = api.project(owner, "Tasks", member)
    r = api.post(
        f"/v1/projects/{project}/tasks",
        {
            "title": "Write docs",
            "description": "all of them",
            "priority": "high",
            "due_date": "2027-03-01",
            "assignee_id": str(member.id),
        },
        member,
    )
    assert r.status_code == 201 and r.json()["version"] == 2  # created, then assigned, in one append
    task = r.json()["id"]
    edit = api.post(f"/v1/tasks/{task}/edit", {"title": "Write more docs", "due_date": None}, member, if_match="2")
    assert edit.status_code == 200 and edit.json()["version"] == 3
    assert int(edit.json()["position"]) > int(r.json()["position"])
    same = api.post(f"/v1/tasks/{task}/edit", {"title": "Write more docs"}, member)
    assert same.status_code == 200 and same.json() == {"id": task, "version": 3, "position": None}
    assert api.post(f"/v1/tasks/{task}/unassign", user=member).status_code == 200
    assert_problem(api.post(f"/v1/tasks/{task}/unassign", user=member), 409)
    assert api.post(f"/v1/tasks/{task}/assign", {"assignee_id": str(owner.id)}, member).status_code == 200
    assert_problem(api.post(f"/v1/tasks/{task}/assign", {"assignee_id": str(owner.id)}, member), 409)
    assert api.post(f"/v1/tasks/{task}/start", user=member).status_code == 200
    assert_problem(api.post(f"/v1/tasks/{task}/start", user=member), 409)
    assert api.post(f"/v1/tasks/{task}/complete", user=member).status_code == 200
    assert_problem(api.post(f"/v1/tasks/{task}/complete", user=member), 409, says="already done")
    assert_problem(api.post(f"/v1/tasks/{task}/start", user=member), 409)
    assert api.post(f"/v1/tasks/{task}/reopen", user=member).status_code == 200
    assert_problem(api.post(f"/v1/tasks/{task}/reopen", user=member), 409)
    assert api.post(f"/v1/tasks/{task}/complete", user=member, if_match="8").json()["version"] == 9


def test_task_commands_reject_bad_input(api: Api, team: tuple[User, User, User]) -> None:
    owner, member, outsider = team
    project = api.project(owner, "Validated", member)
    url = f"/v1/projects/{project}/tasks"
    assert_problem(api.post(url, {"title": "t", "priority": "asap"}, owner), 422, field="priority")
    assert_problem(api.post(url, {"title": "t", "due_date": "tomorrow"}, owner), 422, field="due_date")
    assert_problem(api.post(url, {"title": ""}, owner), 422, field="title")
    assert_problem(api.post(url, {"title": "t", "assignee_id": str(outsider.id)}, owner), 422, field="assignee_id")
    task = api.task(owner, project)
    assert_problem(api.post(f"/v1/tasks/{task}/edit", {}, owner), 422)
    assert_problem(api.post(f"/v1/tasks/{task}/edit", {"status": "done"}, owner), 422, field="status")
    assert_problem(api.post(f"/v1/tasks/{task}/edit", {"priority": None}, owner), 422, field="priority")
    assert_problem(
        api.post(f"/v1/tasks/{task}/assign", {"assignee_id": str(outsider.id)}, owner), 422, field="assignee_id"
    )
    assert_problem(api.post(f"/v1/tasks/{task}/assign", {}, owner), 422, field="assignee_id")
    assert_problem(api.post(f"/v1/tasks/{task}/edit", {"title": "x"}, owner, if_match="7"), 412)
    assert_problem(api.post(f"/v1/tasks/{uuid.uuid4()}/start", user=owner), 404)
    assert_problem(api.post(f"/v1/tasks/{project}/start", user=owner), 404)  # a project id is not a task id


def test_only_members_managers_and_admins_command_tasks_and_outsiders_do_not_see_them(
    api: Api, team: tuple[User, User, User], admin: User
) -> None:
    owner, member, outsider = team
    project = api.project(owner, "Members only", member)
    task = api.task(member, project)
    assert_problem(api.post(f"/v1/projects/{project}/tasks", {"title": "sneaky"}, outsider), 404)
    assert_problem(api.post(f"/v1/tasks/{task}/start", user=outsider), 404)
    assert_problem(api.post(f"/v1/tasks/{task}/edit", {"title": "mine"}, outsider), 404)
    assert api.post(f"/v1/tasks/{task}/start", user=admin).status_code == 200
    assert api.post(f"/v1/projects/{project}/tasks", {"title": "by admin"}, admin).status_code == 201
    assert api.delete(f"/v1/projects/{project}/members/{member.id}", owner).status_code == 200
    assert_problem(api.post(f"/v1/tasks/{task}/complete", user=member), 404)


def test_an_archived_projects_tasks_are_frozen(api: Api, team: tuple[User, User, User]) -> None:
    owner, _, _ = team
    project = api.project(owner, "Frozen")
    task = api.task(owner, project)
    assert api.post(f"/v1/projects/{project}/archive", user=owner).status_code == 200
    assert_problem(api.post(f"/v1/tasks/{task}/edit", {"title": "thaw"}, owner), 409, says="archived")
    assert_problem(api.post(f"/v1/tasks/{task}/start", user=owner), 409, says="archived")
    assert_problem(api.post(f"/v1/projects/{project}/tasks", {"title": "new"}, owner), 409, says="archived")

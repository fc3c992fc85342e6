"""Commands and queries agree on who may see what: a project, task or order the caller may not
see is 404 to its commands exactly as to its queries, and "my tasks" lists only tasks of projects
the caller can still see."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.commerce import new_sku
from tests.integration.http import Api, User, assert_problem

pytestmark = pytest.mark.usefixtures("pipeline")


def same_404(command: Any, query: Any) -> None:
    """The command's answer is the query's: 404, the same title, nothing about who may see it."""
    c, q = assert_problem(command, 404), assert_problem(query, 404)
    assert c["title"] == q["title"] == "Not Found"
    assert "member" not in c["detail"] and "owner" not in c["detail"], c["detail"]


def test_commands_on_a_project_task_or_order_the_caller_may_not_see_answer_404_as_queries_do(
    api: Api, admin: User
) -> None:
    owner, outsider = api.register("Ivy Insider"), api.register("Otto Outsider")
    project = api.project(owner, "Hidden")
    r = api.post(f"/v1/projects/{project}/tasks", {"title": "Secret plan"}, owner)
    task, wait = r.json()["id"], {"x_min_position": r.json()["position"]}
    same_404(
        api.post(f"/v1/projects/{project}/rename", {"name": "Mine"}, outsider),
        api.get(f"/v1/projects/{project}", outsider, **wait),
    )
    same_404(
        api.post(f"/v1/projects/{project}/tasks", {"title": "x"}, outsider),
        api.get(f"/v1/projects/{project}/tasks", outsider, **wait),
    )
    same_404(api.post(f"/v1/tasks/{task}/edit", {"title": "x"}, outsider), api.get(f"/v1/tasks/{task}", outsider))
    same_404(api.post(f"/v1/tasks/{task}/start", user=outsider), api.get(f"/v1/tasks/{task}", outsider))

    sku = new_sku()
    body = {"sku": sku, "name": "Widget", "price_minor": 100, "currency": "EUR"}
    assert api.post("/v1/products", body, admin).status_code == 201
    assert api.post(f"/v1/inventory/{sku}/receive", {"quantity": 5}, admin).status_code == 200
    r = api.post("/v1/orders", {"lines": [{"sku": sku, "quantity": 1}]}, owner)
    order, wait = r.json()["id"], {"x_min_position": r.json()["position"]}
    same_404(api.post(f"/v1/orders/{order}/cancel", user=outsider), api.get(f"/v1/orders/{order}", outsider, **wait))
    same_404(
        api.post(f"/v1/orders/{order}/pay", {"payment_ref": "x"}, outsider), api.get(f"/v1/orders/{order}", outsider)
    )


def test_my_tasks_shows_only_tasks_of_projects_the_caller_can_still_see(api: Api) -> None:
    owner, member = api.register("Olive Owner"), api.register("Milo Member")
    kept = api.project(owner, "Kept", member)
    left = api.project(owner, "Left", member)
    api.task(owner, left, title="In the project I leave", assignee_id=str(member.id))
    r = api.post(f"/v1/projects/{kept}/tasks", {"title": "Still mine", "assignee_id": str(member.id)}, owner)
    mine = api.get("/v1/me/tasks", member, x_min_position=r.json()["position"]).json()
    assert (mine["open_count"], len(mine["items"])) == (2, 2)

    r = api.delete(f"/v1/projects/{left}/members/{member.id}", owner)
    assert r.status_code == 200
    mine = api.get("/v1/me/tasks", member, x_min_position=r.json()["position"]).json()
    assert mine["open_count"] == 1
    assert [t["title"] for t in mine["items"]] == ["Still mine"]
    page = api.get("/v1/me/tasks?limit=1", member).json()
    assert page["open_count"] == 1 and len(page["items"]) == 1

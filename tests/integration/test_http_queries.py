"""Query routes over HTTP: read-your-writes, authorization, lists, ETags, health."""

from __future__ import annotations

import time
import uuid
from typing import Any

import psycopg
import pytest

from infra.settings import Settings
from tests.integration.http import Api, User, assert_problem
from tests.waiting import eventually

pytestmark = pytest.mark.usefixtures("pipeline")


def _wait(api: Api, r: Any) -> dict[str, str]:
    return {"x_min_position": r.json()["position"]}


@pytest.fixture(scope="module")
def manager(api: Api, admin: User) -> User:
    """Staff who only read (as the admin does): one for the module."""
    manager = api.register("Max Mgr")
    assert api.post(f"/v1/users/{manager.id}/roles", {"role": "manager"}, admin).status_code == 200
    return api.relogin(manager)


@pytest.fixture
def world(api: Api, admin: User, manager: User) -> dict[str, Any]:
    """The test's own owner, member and outsider, and a project and task of theirs."""
    owner, member, outsider = (api.register(n) for n in ("Owen Owner", "Mia Member", "Oscar Out"))
    project = api.project(owner, "Visible", member)
    r = api.post(
        f"/v1/projects/{project}/tasks",
        {"title": "First", "assignee_id": str(member.id), "priority": "high", "due_date": "2027-02-01"},
        owner,
    )
    return {
        "owner": owner,
        "member": member,
        "outsider": outsider,
        "manager": manager,
        "admin": admin,
        "project": project,
        "task": r.json()["id"],
        "position": r.json()["position"],
    }


def test_a_query_with_x_min_position_always_sees_the_write(api: Api, world: dict[str, Any]) -> None:
    owner, task = world["owner"], world["task"]
    for i in range(15):
        r = api.post(f"/v1/tasks/{task}/edit", {"title": f"Title {i}"}, owner)
        got = api.get(f"/v1/tasks/{task}", owner, **_wait(api, r))
        assert got.status_code == 200 and got.json()["title"] == f"Title {i}"
        assert got.headers["etag"] == f'"{r.json()["version"]}"'
    r = api.post(f"/v1/tasks/{task}/complete", user=owner)
    board = api.get(f"/v1/projects/{world['project']}/board", owner, **_wait(api, r)).json()
    assert board["by_status"] == {"todo": 0, "in_progress": 0, "done": 1} and board["total"] == 1
    r = api.post(f"/v1/tasks/{task}/reopen", user=owner)
    mine = api.get("/v1/me/tasks", world["member"], **_wait(api, r)).json()
    assert mine["open_count"] == 1 and [t["id"] for t in mine["items"]] == [task]
    r = api.post(f"/v1/projects/{world['project']}/rename", {"name": "Renamed"}, owner)
    assert api.get(f"/v1/projects/{world['project']}", owner, **_wait(api, r)).json()["name"] == "Renamed"
    listed = api.get("/v1/projects", owner, **_wait(api, r)).json()["items"]
    assert [p["name"] for p in listed if p["id"] == str(world["project"])] == ["Renamed"]
    tasks = api.get(f"/v1/projects/{world['project']}/tasks", owner, **_wait(api, r)).json()["items"]
    assert [t["id"] for t in tasks] == [task]
    user = api.register("Newly Registered")
    r = api.post(
        "/v1/auth/register",
        {"email": f"n-{uuid.uuid4().hex[:6]}@example.com", "password": "long enough", "name": "Fresh"},
    )
    seen = api.get(f"/v1/users/{r.json()['id']}", user, **_wait(api, r))
    assert seen.status_code == 200 and seen.json()["name"] == "Fresh" and "email" not in seen.json()
    me = api.get("/v1/me", user, x_min_position=r.json()["position"]).json()
    assert me["id"] == str(user.id) and me["email"] == user.email and me["roles"] == ["member"]


def test_a_position_the_views_do_not_reach_in_time_is_503_with_retry_after(
    api: Api, world: dict[str, Any], settings: Settings
) -> None:
    with psycopg.connect(settings.database_url or "") as hold:
        # The task list's projector cannot commit its checkpoint while this lock is held.
        hold.execute("SELECT 1 FROM projection_checkpoints WHERE projection = 'task_list' FOR UPDATE")
        r = api.post(f"/v1/tasks/{world['task']}/edit", {"title": "Held back"}, world["owner"])
        assert r.status_code == 200, r.text
        held = api.get(f"/v1/tasks/{world['task']}", world["owner"], x_min_position=r.json()["position"])
        hold.rollback()
    assert_problem(held, 503, says="caught up")
    assert held.headers["retry-after"] == "1"
    assert_problem(api.get(f"/v1/tasks/{world['task']}", world["owner"], x_min_position="soon"), 400)


def test_a_position_no_command_gave_out_is_422(api: Api, world: dict[str, Any]) -> None:
    far = str(int(world["position"]) << 8)
    r = api.get(f"/v1/tasks/{world['task']}", world["owner"], x_min_position=far)
    assert_problem(r, 422, field="X-Min-Position")


@pytest.mark.parametrize(
    "route",
    ["/v1/projects/{project}", "/v1/projects/{project}/tasks", "/v1/projects/{project}/board", "/v1/tasks/{task}"],
)
def test_project_resources_are_visible_to_members_managers_and_admins_only(
    api: Api, world: dict[str, Any], route: str
) -> None:
    url = route.format(project=world["project"], task=world["task"])
    for who in ("owner", "member", "manager", "admin"):
        r = api.get(url, world[who], x_min_position=world["position"])
        assert r.status_code == 200, (who, r.text)
    assert_problem(api.get(url, world["outsider"], x_min_position=world["position"]), 404)
    assert_problem(api.get(url), 401)


def test_project_lists_show_own_projects_and_all_to_staff(api: Api, world: dict[str, Any]) -> None:
    other = api.project(world["outsider"], "Not yours")
    r = api.post(f"/v1/projects/{other}/rename", {"name": "Still not yours"}, world["outsider"])
    wait = _wait(api, r)

    def ids(user: User) -> set[str]:
        found, cursor = set(), None
        while True:
            page = api.get("/v1/projects" + (f"?cursor={cursor}" if cursor else ""), user, **wait).json()
            found |= {p["id"] for p in page["items"]}
            if not (cursor := page["next_cursor"]):
                return found

    assert str(world["project"]) in ids(world["member"]) and str(other) not in ids(world["member"])
    assert {str(world["project"]), str(other)} <= ids(world["manager"])
    assert {str(world["project"]), str(other)} <= ids(world["admin"])
    assert_problem(api.get("/v1/projects"), 401)
    assert_problem(api.get("/v1/me"), 401)
    assert_problem(api.get("/v1/me/tasks"), 401)
    assert_problem(api.get(f"/v1/users/{world['owner'].id}"), 401)


def test_users_are_visible_to_users_and_emails_to_themselves_and_staff(api: Api, world: dict[str, Any]) -> None:
    url = f"/v1/users/{world['member'].id}"
    assert "email" not in api.get(url, world["outsider"], x_min_position=world["position"]).json()
    for who in ("member", "manager", "admin"):
        assert api.get(url, world[who], x_min_position=world["position"]).json()["email"] == world["member"].email
    assert_problem(api.get(f"/v1/users/{uuid.uuid4()}", world["owner"]), 404)
    assert "password_hash" not in api.get(url, world["member"]).text


def test_task_lists_filter_sort_and_page(api: Api, world: dict[str, Any]) -> None:
    owner, member, project = world["owner"], world["member"], world["project"]
    specs = [
        ("Alpha", "low", "2027-01-05"),
        ("bravo", "urgent", None),
        ("Charlie", "normal", "2027-01-01"),
        ("delta", "high", "2027-03-01"),
        ("Echo alpha", "urgent", "2026-12-24"),
    ]
    last = None
    for title, priority, due in specs:
        body: dict[str, Any] = {"title": title, "priority": priority}
        if due:
            body["due_date"] = due
        last = api.post(f"/v1/projects/{project}/tasks", body, owner)
    r = api.post(f"/v1/tasks/{last.json()['id']}/assign", {"assignee_id": str(member.id)}, owner)  # type: ignore[union-attr]
    wait, url = _wait(api, r), f"/v1/projects/{project}/tasks"

    def titles(query: str) -> list[str]:
        body = api.get(url + query, owner, **wait)
        assert body.status_code == 200, body.text
        return [t["title"] for t in body.json()["items"]]

    assert titles("?sort=title&q=alpha") == ["Alpha", "Echo alpha"]
    assert titles("?sort=-priority&priority=urgent") == ["Echo alpha", "bravo"] or titles(
        "?sort=-priority&priority=urgent"
    ) == ["bravo", "Echo alpha"]
    assert titles("?sort=due&due_before=2027-01-06") == ["Echo alpha", "Charlie", "Alpha"]
    assert titles("?sort=-due")[0] == "bravo", "no due date sorts after every date"
    assert titles(f"?assignee={member.id}&sort=title") == ["Echo alpha", "First"]
    assert titles("?assignee=none&sort=title") == ["Alpha", "Charlie", "bravo", "delta"]
    assert titles("?status=todo&sort=created")[:2] == ["First", "Alpha"]
    pages, cursor, seen = 0, None, []
    while True:
        body = api.get(url + "?sort=title&limit=2" + (f"&cursor={cursor}" if cursor else ""), owner, **wait).json()
        seen += [t["title"] for t in body["items"]]
        pages += 1
        if not (cursor := body["next_cursor"]):
            break
    assert seen == sorted(seen, key=lambda t: t.encode()) and len(seen) == 6 and pages == 3
    assert_problem(api.get(url + "?limit=201", owner), 422, field="limit")
    assert_problem(api.get(url + "?status=finished", owner), 422, field="status")
    assert_problem(api.get(url + "?sort=colour", owner), 422, field="sort")
    assert_problem(api.get(url + "?cursor=not-a-cursor", owner), 422)
    assert_problem(api.get(url + "?assignee=someone", owner), 422, field="assignee")
    assert_problem(api.get(url + "?due_before=soon", owner), 422, field="due_before")


def test_health_reports_projections_relay_and_the_gate(
    api: Api, world: dict[str, Any], settings: Settings, admin: User
) -> None:
    body = api.get("/v1/health", admin).json()
    assert body["status"] == "ok" and body["checks"]["database"]["ok"]
    names = {p["name"] for p in body["projections"]}
    assert names == {
        "user_directory",
        "project_catalog",
        "task_list",
        "task_board",
        "my_tasks",
        "product_catalog",
        "catalog_cache",
        "stock_levels",
        "order_history",
        "order_saga",
    }

    def caught_up() -> dict[str, Any]:
        body = api.get("/v1/health", admin).json()
        behind = {p["name"]: p["lag_events"] for p in [*body["projections"], {"name": "relay", **body["relay"]}]}
        assert set(behind.values()) == {0}, behind
        return dict(body)

    # Lags are floored at 0 by the SQL, so ">= 0" says nothing: once the pipeline has applied
    # everything (nothing writes meanwhile), every lag is exactly 0 events and 0 seconds.
    body = eventually(caught_up, what="the relay and every projection to report no lag")
    assert all(p["state"] == "running" and p["lag_seconds"] == 0 for p in body["projections"]), body["projections"]
    assert body["relay"]["lag_seconds"] == 0 and body["relay"]["position"] == body["head"], body

    # The gate's age is floored at 0 too: hold a transaction that took an id open for a while,
    # and health must report at least that age.
    with psycopg.connect(settings.database_url or "") as conn:
        conn.execute("SELECT pg_current_xact_id()")
        opened = time.monotonic()
        time.sleep(1.0)  # the point of the test: a transaction open for a second holds back the gate
        held = api.get("/v1/health", admin).json()["oldest_transaction_seconds"]
        age = time.monotonic() - opened
    assert 1.0 <= held <= age + 1.0, (held, age)

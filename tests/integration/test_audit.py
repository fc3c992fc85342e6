"""The auditors' view of history, over HTTP and from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commands.base import Actor, Context
from domain.errors import DomainError
from domain.identity import Role
from infra.bootstrap import Chronicle
from infra.settings import Settings
from tests.integration.http import Api, User, api_env, assert_problem

AUDIT_ROUTES = [
    "/v1/audit/streams/{id}",
    "/v1/audit/events",
    "/v1/audit/streams/{id}/state?version=1",
    "/v1/audit/correlations/{corr}",
    "/v1/audit/export",
    "/v1/audit/verify",
]


@pytest.fixture(scope="module")
def auditor(api: Api, admin: User) -> User:
    """The module's auditor and manager are readers: the tests act as them, never on them (each test's
    history is its own), and counts of the auditor's accesses are taken before and after."""
    user = api.register("Audrey Auditor")
    assert api.post(f"/v1/users/{user.id}/roles", {"role": "auditor"}, admin).status_code == 200
    return api.relogin(user)


@pytest.fixture(scope="module")
def manager(api: Api, admin: User) -> User:
    user = api.register("Manny Manager")
    granted = api.post(f"/v1/users/{user.id}/roles", {"role": "manager"}, admin)
    assert granted.status_code == 200, granted.text
    user = api.relogin(user)
    sku = f"AUDIT-{uuid.uuid4().hex[:8].upper()}"
    staff_only = api.post("/v1/products", {"sku": sku, "name": "Managed", "price_minor": 100, "currency": "EUR"}, user)
    assert staff_only.status_code == 201, f"the manager role did not take: {staff_only.text}"
    return user


@pytest.fixture
def history(api: Api) -> dict[str, Any]:
    owner = api.register("Hugo History")
    correlation = str(uuid.uuid4())
    project = api.project(owner, "Audited")
    r = api.post(
        f"/v1/projects/{project}/tasks",
        {"title": "Traced", "assignee_id": str(owner.id)},
        owner,
        x_correlation_id=correlation,
    )
    task = r.json()["id"]
    api.post(f"/v1/tasks/{task}/start", user=owner)
    api.post(f"/v1/tasks/{task}/complete", user=owner)
    return {"owner": owner, "project": project, "task": task, "correlation": correlation}


def test_only_auditors_and_admins_read_history(
    api: Api, history: dict[str, Any], auditor: User, admin: User, manager: User
) -> None:
    for route in AUDIT_ROUTES:
        url = route.format(id=history["task"], corr=history["correlation"])
        assert_problem(api.get(url, history["owner"]), 403)
        assert_problem(api.get(url), 401)
        assert_problem(api.get(url, manager), 403)
        assert api.get(url, auditor).status_code == 200, url
        assert api.get(url, admin).status_code == 200, url


def test_a_stream_in_order_with_who_and_why(api: Api, history: dict[str, Any], auditor: User) -> None:
    body = api.get(f"/v1/audit/streams/{history['task']}", auditor).json()
    events = body["items"]
    assert [e["type"] for e in events] == ["Task.Created", "Task.Assigned", "Task.Started", "Task.Completed"]
    assert [e["version"] for e in events] == [1, 2, 3, 4]
    first = events[0]
    assert first["actor_id"] == str(history["owner"].id) and first["command"] == "tasks.create"
    assert first["correlation_id"] == history["correlation"] and first["causation_id"]
    assert events[0]["causation_id"] == events[1]["causation_id"], "one request caused both"
    page = api.get(f"/v1/audit/streams/{history['task']}?limit=3", auditor).json()
    rest = api.get(f"/v1/audit/streams/{history['task']}?limit=3&cursor={page['next_cursor']}", auditor).json()
    assert [e["version"] for e in page["items"] + rest["items"]] == [1, 2, 3, 4] and rest["next_cursor"] is None


def test_the_global_log_filters_and_pages(api: Api, history: dict[str, Any], auditor: User) -> None:
    owner = str(history["owner"].id)
    started = api.get(f"/v1/audit/events?type=Task.Started&actor={owner}", auditor).json()["items"]
    assert [e["stream_id"] for e in started] == [history["task"]]
    now = datetime.now(UTC)
    recent = api.get(
        "/v1/audit/events",
        auditor,
    ).json()
    assert recent["items"] and all(
        int(a["position"]) < int(b["position"]) for a, b in zip(recent["items"], recent["items"][1:], strict=False)
    )
    future = (now + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert api.get(f"/v1/audit/events?from={future}", auditor).json()["items"] == []
    mine = api.get(f"/v1/audit/events?actor={owner}&limit=2", auditor).json()
    following = api.get(f"/v1/audit/events?actor={owner}&limit=2&cursor={mine['next_cursor']}", auditor).json()
    assert int(following["items"][0]["position"]) > int(mine["items"][-1]["position"])
    assert_problem(api.get("/v1/audit/events?cursor=abc", auditor), 422)
    assert_problem(api.get("/v1/audit/events?from=yesterday", auditor), 422)


def test_a_correlation_is_a_causation_tree(api: Api, history: dict[str, Any], auditor: User) -> None:
    tree = api.get(f"/v1/audit/correlations/{history['correlation']}", auditor).json()
    assert tree["event_count"] == 2 and len(tree["requests"]) == 1
    assert [n["event"]["type"] for n in tree["requests"][0]["events"]] == ["Task.Created", "Task.Assigned"]
    assert_problem(api.get(f"/v1/audit/correlations/{uuid.uuid4()}", auditor), 404)


def test_state_at_a_version_a_time_or_a_position(api: Api, history: dict[str, Any], auditor: User) -> None:
    url = f"/v1/audit/streams/{history['task']}/state"
    assert api.get(url + "?version=2", auditor).json()["state"]["status"] == "todo"
    done = api.get(url + "?version=4", auditor).json()
    assert done["state"]["status"] == "done" and done["type"] == "Task" and done["version"] == 4
    events = api.get(f"/v1/audit/streams/{history['task']}", auditor).json()["items"]
    at_started = api.get(url + f"?position={events[2]['position']}", auditor).json()
    assert at_started["version"] == 3 and at_started["state"]["status"] == "in_progress"
    stamp = events[2]["recorded_at"].replace("+00:00", "Z")
    assert api.get(url + f"?at={stamp}", auditor).json()["version"] == 3
    assert_problem(api.get(url, auditor), 422)
    assert_problem(api.get(url + "?version=1&position=5", auditor), 422)
    assert_problem(api.get(url + "?version=99", auditor), 404)
    user_state = api.get(f"/v1/audit/streams/{history['owner'].id}/state?version=1", auditor).json()
    assert user_state["state"]["password_hash"] == "[redacted]"


def test_export_is_ndjson_in_order(api: Api, history: dict[str, Any], auditor: User) -> None:
    r = api.get(f"/v1/audit/export?actor={history['owner'].id}", auditor)
    assert r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert len(lines) == 5 and [int(e["position"]) for e in lines] == sorted(int(e["position"]) for e in lines)
    assert "argon2" not in r.text


def test_every_access_to_history_is_recorded(
    api: Api, history: dict[str, Any], auditor: User, settings: Settings
) -> None:
    def accesses() -> int:
        with psycopg.connect(settings.database_url or "") as conn:
            row = conn.execute(
                "SELECT count(*) FROM events WHERE type = 'AuditAccess.Recorded' AND actor_id = %s", (str(auditor.id),)
            ).fetchone()
        return int(row[0]) if row else 0

    before = accesses()
    api.get(f"/v1/audit/streams/{history['task']}", auditor)
    api.get("/v1/audit/verify", auditor)
    assert accesses() == before + 2


def test_the_command_line_has_the_same_powers(history: dict[str, Any], settings: Settings) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "api.cli", "audit", *args],
            env=api_env(settings),
            capture_output=True,
            text=True,
            timeout=60,
        )

    stream = cli("stream", history["task"])
    assert stream.returncode == 0, stream.stderr
    assert [json.loads(line)["version"] for line in stream.stdout.splitlines()] == [1, 2, 3, 4]
    state = cli("state", history["task"], "--version", "3")
    assert json.loads(state.stdout)["state"]["status"] == "in_progress"
    log = cli("log", "--type", "Task.Completed", "--actor", str(history["owner"].id))
    assert [json.loads(line)["stream_id"] for line in log.stdout.splitlines()] == [history["task"]]
    export = cli("export", "--actor", str(history["owner"].id))
    assert len(export.stdout.splitlines()) == 5
    tree = cli("correlation", history["correlation"])
    assert json.loads(tree.stdout)["event_count"] == 2
    verified = cli("verify")
    assert verified.returncode == 0 and json.loads(verified.stdout)["ok"] is True


COMMANDS = st.lists(
    st.sampled_from(["edit", "assign", "unassign", "start", "complete", "reopen"]), min_size=1, max_size=12
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(commands=COMMANDS, titles=st.lists(st.text("abcdef ", min_size=1, max_size=6), min_size=12, max_size=12))
def test_state_at_each_version_is_the_aggregate_after_that_command(
    chronicle_app: Chronicle, commands: list[str], titles: list[str]
) -> None:
    work = chronicle_app.work
    owner = chronicle_app.identity.register(
        Context("t"), f"{uuid.uuid4().hex[:8]}@example.com", "O", "long enough pw"
    ).id
    ctx = Context("t", actor=Actor(owner, frozenset({Role.MEMBER})))
    project = work.create_project(ctx, "P", None).id
    task = work.create_task(ctx, project, "start").id
    expected = {1: chronicle_app.audit.state_at(task, 1)["state"]}
    for command, title in zip(commands, titles, strict=False):
        try:
            match command:
                case "edit":
                    work.edit_task(ctx, task, {"title": title})
                case "assign":
                    work.assign_task(ctx, task, owner)
                case "unassign":
                    work.unassign_task(ctx, task)
                case _:
                    getattr(work, f"{command}_task")(ctx, task)
        except DomainError:
            continue
        aggregate = work.load_task(task, fresh=True)
        expected[aggregate.version] = json.loads(
            json.dumps({k: v for k, v in vars(aggregate).items() if not k.startswith("_")}, default=str, sort_keys=True)
        )
    for version, state in expected.items():
        replayed = chronicle_app.audit.state_at(task, version)
        assert replayed["version"] == version
        assert json.loads(json.dumps(replayed["state"], default=str, sort_keys=True)) == json.loads(
            json.dumps(state, default=str, sort_keys=True)
        ), version

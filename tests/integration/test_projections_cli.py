"""`chronicle projections …`: status, blue/green rebuilds under traffic, a changed projection,
refusing a second rebuild, and repairing a parked projection."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from infra.delivery.leadership import lock_key
from infra.settings import Settings
from infra.views.operations import rebuild
from projections.base import SqlView
from projections.tasks import TaskList
from tests.integration.http import Api, api_env, running_api
from tests.integration.pipeline import all_roles, differences_from_scratch, running, wait_active, wait_caught_up
from tests.waiting import eventually


@pytest.fixture
def stack(fresh_database_url: str, settings: Settings) -> Iterator[tuple[Settings, Api]]:
    """An API, relay and projectors of the test's own (database and namespace)."""
    own = Settings(
        database_url=fresh_database_url,
        nats_url=settings.nats_url,
        redis_url=settings.redis_url,
        namespace=f"p{uuid.uuid4().hex[:8]}",
    )
    # Reads wait for their position longer than the default 2 s: a rebuild pauses the live projector
    # for its final catch-up and switch, and a slow machine must not turn that pause into a 503.
    # The relay and projector start first: they come up while the API does, not after it answers.
    with running(own, "relay", "projector"), running_api(own, CHRONICLE_MIN_POSITION_WAIT_MS="15000") as base:
        wait_active(own, *all_roles())
        client = Api(base)
        yield own, client
        client.http.close()


def cli(settings: Settings, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", "projections", *args],
        env=api_env(settings),
        capture_output=True,
        text=True,
        timeout=300,
        input=stdin,
    )


def status(settings: Settings) -> dict[str, dict[str, Any]]:
    out = cli(settings, "status", "--json")
    assert out.returncode == 0, out.stderr
    return {row["name"]: row for row in json.loads(out.stdout)}


class Traffic:
    """Commands and queries flowing while an operator rebuilds; every query is checked."""

    def __init__(self, api: Api, project: str, owner: Any) -> None:
        self.api, self.project, self.owner = api, project, owner
        self.created: list[tuple[int, str]] = []
        self.failures: list[str] = []
        self.queries = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._write), threading.Thread(target=self._read)]

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()

    def _write(self) -> None:
        with httpx.Client(base_url=self.api.base, timeout=30) as http:
            while not self.stop.is_set():
                r = http.post(
                    f"/v1/projects/{self.project}/tasks",
                    json={"title": f"T{len(self.created)}"},
                    headers=self.owner.auth,
                )
                if r.status_code != 201:
                    self.failures.append(f"command {r.status_code} {r.text}")
                    continue
                self.created.append((int(r.json()["position"]), r.json()["id"]))
                http.post(f"/v1/tasks/{r.json()['id']}/start", headers=self.owner.auth)
                time.sleep(0.01)

    def _read(self) -> None:
        with httpx.Client(base_url=self.api.base, timeout=30) as http:
            while not self.stop.is_set():
                if not self.created:
                    time.sleep(0.01)
                    continue
                position, _ = self.created[-1]
                expected = {task for p, task in self.created if p <= position}
                seen: set[str] = set()
                cursor = None
                while True:
                    query = f"?limit=200&sort=created{'&cursor=' + cursor if cursor else ''}"
                    r = http.get(
                        f"/v1/projects/{self.project}/tasks{query}",
                        headers={**self.owner.auth, "X-Min-Position": str(position)},
                    )
                    if r.status_code != 200:
                        self.failures.append(f"list {r.status_code} {r.text}")
                        break
                    seen |= {t["id"] for t in r.json()["items"]}
                    if not (cursor := r.json()["next_cursor"]):
                        break
                if expected - seen:
                    self.failures.append(f"the list lacked {len(expected - seen)} task(s) at {position}")
                board = http.get(
                    f"/v1/projects/{self.project}/board", headers={**self.owner.auth, "X-Min-Position": str(position)}
                )
                if board.status_code != 200 or board.json()["total"] < len(expected):
                    self.failures.append(f"board {board.status_code} {board.text[:200]}")
                self.queries += 1


@pytest.mark.timeout(300)
def test_rebuild_under_traffic_switches_without_a_failed_or_half_built_query(stack: tuple[Settings, Api]) -> None:
    settings, api = stack
    owner = api.register("Rebecca Rebuild")
    project = str(api.project(owner, "Rebuilt"))
    for i in range(150):
        api.task(owner, uuid.UUID(project), title=f"before {i}")
    with Traffic(api, project, owner) as traffic:
        eventually(lambda: traffic.queries >= 3 and len(traffic.created) >= 5, what="commands and queries to flow")
        for name in ("task_list", "task_board"):
            out = cli(settings, "rebuild", name)
            assert out.returncode == 0, out.stderr
            assert "switched: queries now read v2" in out.stdout, out.stdout
        switched_at = traffic.queries
        eventually(lambda: traffic.queries >= switched_at + 3, what="queries checked after the switch")
    assert traffic.failures == [], traffic.failures[:5]
    assert traffic.queries > 5 and len(traffic.created) > 10
    states = status(settings)
    assert states["task_list"]["version"] == 2 and states["task_board"]["version"] == 2
    wait_caught_up(settings)
    differences = differences_from_scratch(settings)
    assert differences == {name: [] for name in differences}, differences
    with psycopg.connect(settings.database_url or "") as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'work_views'")}
        switches = conn.execute("SELECT count(*) FROM operations_log WHERE operation = 'rebuild.switch'").fetchone()
    assert "tasks_v2" in tables and "tasks_v1" not in tables, "the old version is dropped after the switch"
    assert switches == (2,)


class ShoutingTaskList(TaskList):
    """The same projection after a code change: titles are now stored in capitals."""

    def apply(self, event: Any, view: SqlView) -> None:
        if event.type in ("Task.Created", "Task.Edited"):
            data = dict(event.data)
            if data.get("title") is not None:  # Task.Created, and Task.Edited as stored now
                data["title"] = data["title"].upper()
            if "changes" in data and "title" in data["changes"]:  # Task.Edited as stored before version 2
                data["changes"] = {**data["changes"], "title": data["changes"]["title"].upper()}
            event = type(event)(**{**{f: getattr(event, f) for f in event.__struct_fields__}, "data": data})
        super().apply(event, view)


@pytest.mark.timeout(300)
def test_a_changed_projection_rebuilds_into_its_new_view(stack: tuple[Settings, Api]) -> None:
    settings, api = stack
    owner = api.register("Cody Changed")
    project = api.project(owner, "Code change")
    task = api.task(owner, project, title="quiet title")
    edited = api.post(f"/v1/tasks/{task}/edit", {"title": "still quiet"}, owner).json()["position"]
    wait_caught_up(settings)
    # Read, so the API process's cache (infra.views.l1) holds the task as the old version has it.
    assert api.get(f"/v1/tasks/{task}", owner, x_min_position=str(edited)).json()["title"] == "still quiet"
    compared = asyncio.run(rebuild(settings, ShoutingTaskList(), switch=True, force=False))
    assert not compared.switched and any("tasks" in d for d in compared.differences)
    forced = asyncio.run(rebuild(settings, ShoutingTaskList(), switch=True, force=True))
    assert forced.switched and forced.new_version == 2
    # The switch is announced as it commits: within moments every answer is the new version's.
    eventually(lambda: api.get(f"/v1/tasks/{task}", owner).json()["title"] == "STILL QUIET", what="v2", timeout=5)
    for _ in range(5):
        got = api.get(f"/v1/tasks/{task}", owner)
        assert got.status_code == 200 and got.json()["title"] == "STILL QUIET"


def test_a_second_rebuild_of_the_same_projection_refuses(stack: tuple[Settings, Api]) -> None:
    settings, _ = stack
    with psycopg.connect(settings.database_url or "", autocommit=True) as held:
        held.execute("SELECT pg_advisory_lock(%s)", (lock_key(settings.namespace, "rebuild", "task_list"),))
        out = cli(settings, "rebuild", "task_list")
        assert out.returncode == 2 and "already running" in out.stderr, out.stderr
        assert status(settings)["task_list"]["state"] == "rebuilding"
    assert status(settings)["task_list"]["state"] == "running"


def test_list_names_every_projection_and_what_it_handles(stack: tuple[Settings, Api]) -> None:
    settings, _ = stack
    out = cli(settings, "list")
    assert out.returncode == 0
    for name in ("user_directory", "project_catalog", "task_list", "task_board", "my_tasks"):
        assert name in out.stdout
    assert "Task.Assigned" in out.stdout and "redis" in out.stdout and "sql" in out.stdout
    table = cli(settings, "status")
    assert "PROJECTION" in table.stdout and "running" in table.stdout


@pytest.mark.timeout(300)
def test_a_parked_projection_is_retried_or_skipped_explicitly(stack: tuple[Settings, Api]) -> None:
    from eventsourcing.persistence import StoredEvent

    from commands.base import make_transcoder
    from infra.eventstore.recorder import ChronicleApplicationRecorder, EventStoreDatabase

    settings, api = stack
    owner = api.register("Pat Parked")
    project = api.project(owner, "Poisoned")
    database = EventStoreDatabase(settings.database_url or "")
    bad = make_transcoder().encode(
        {
            "project_id": project,
            "title": "bad",
            "description": "",
            "priority": "weird",
            "due_date": None,
            "created_by": owner.id,
        }
    )
    poison = uuid.uuid4()
    ChronicleApplicationRecorder(database).insert_events([StoredEvent(poison, 1, "domain.work:Task.Created", bad)])
    database.close()
    parked = eventually(
        lambda: (row := status(settings)["task_list"])["state"] == "parked" and row, what="task_list to park"
    )
    assert "weird" in parked["error"]
    # Anyone's /v1/health may be up to a second old.
    eventually(lambda: api.get("/v1/health").json()["status"] == "degraded", what="health to say degraded")
    again = cli(settings, "retry", "task_list")
    assert again.returncode == 0, again.stderr
    eventually(lambda: status(settings)["task_list"]["state"] == "parked", what="task_list to park again")
    with psycopg.connect(settings.database_url or "") as conn:
        event_id = conn.execute("SELECT event_id FROM dead_letters WHERE resolved IS NULL").fetchone()[0]  # type: ignore[index]
    wrong = cli(settings, "skip", "task_list", "--event", str(uuid.uuid4()))
    assert wrong.returncode == 2 and "not parked on event" in wrong.stderr
    skipped = cli(settings, "skip", "task_list", "--event", str(event_id))
    assert skipped.returncode == 0, skipped.stderr
    created = api.post(f"/v1/projects/{project}/tasks", {"title": "after the skip"}, owner)
    assert created.status_code == 201, created.text
    task, position = created.json()["id"], created.json()["position"]
    got = eventually(
        lambda: (r := api.get(f"/v1/tasks/{task}", owner, x_min_position=str(position))).status_code == 200 and r,
        what="the task created after the skip in task_list",
    )
    assert got.json()["id"] == task and got.json()["title"] == "after the skip", got.text
    assert status(settings)["task_list"]["state"] == "running"
    with psycopg.connect(settings.database_url or "") as conn:
        logged = conn.execute("SELECT operation, detail->>'event_id' FROM operations_log ORDER BY id").fetchall()
    assert ("skip", str(event_id)) in logged and ("retry", None) in logged


@pytest.mark.timeout(300)
def test_reset_empties_a_view_which_rebuilds_from_the_start(stack: tuple[Settings, Api]) -> None:
    settings, api = stack
    owner = api.register("Rita Reset")
    project = api.project(owner, "Reset me")
    for i in range(5):
        api.task(owner, project, title=f"T{i}")
    wait_caught_up(settings)
    refused = cli(settings, "reset", "task_list", stdin="n\n")
    assert refused.returncode == 2
    out = cli(settings, "reset", "task_list", "--yes")
    assert out.returncode == 0, out.stderr
    wait_caught_up(settings)
    assert len(api.get(f"/v1/projects/{project}/tasks", owner).json()["items"]) == 5
    differences = differences_from_scratch(settings)
    assert differences == {name: [] for name in differences}, differences

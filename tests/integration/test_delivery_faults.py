"""Delivery under faults, with real processes and real servers of the test's own (so it may stop
and kill them): SIGKILLed relays and projectors, NATS restarted mid-stream, Redis flushed and
restarted. Afterwards every view equals one built from scratch from the log."""

from __future__ import annotations

import dataclasses
import random
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import redis

from commands.base import Actor, Context
from domain.errors import DomainError
from domain.identity import Role
from infra.bootstrap import bootstrap
from infra.devstack.embedded import EmbeddedServers
from infra.devstack.scratch import create_database, drop_database
from infra.eventstore.migrate import migrate
from infra.settings import Settings
from infra.views.operations import ProjectionStatus
from projections import all_projections
from tests.integration.http import Api, running_api
from tests.integration.pipeline import (
    all_roles,
    assert_stream_is_the_log,
    checkpoints,
    differences_from_scratch,
    head,
    running,
    wait_active,
    wait_caught_up,
)
from tests.waiting import eventually


@pytest.fixture(scope="module")
def own_servers() -> Iterator[EmbeddedServers]:
    with tempfile.TemporaryDirectory(prefix="chronicle-faults-") as tmp:
        servers = EmbeddedServers(Path(tmp), durable=False)
        servers.start()
        try:
            yield servers
        finally:
            servers.stop()


@pytest.fixture
def fault_settings(own_servers: EmbeddedServers) -> Iterator[Settings]:
    assert own_servers.urls is not None
    url = create_database(own_servers.urls.database_url)
    migrate(url)
    yield Settings(
        database_url=url,
        nats_url=own_servers.urls.nats_url,
        redis_url=own_servers.urls.redis_url,
        namespace=f"f{uuid.uuid4().hex[:8]}",
    )
    drop_database(url)


class Workload(threading.Thread):
    """Users, projects and a stream of task commands, as fast as one writer goes."""

    def __init__(self, settings: Settings, commands: int) -> None:
        super().__init__(daemon=True)
        self.settings, self.commands, self.error = settings, commands, None  # type: ignore[var-annotated]
        self.done = 0

    def run(self) -> None:
        try:
            self._run()
        except BaseException as e:  # reported by the test
            self.error = e

    def _run(self) -> None:
        rng = random.Random(7)
        app = bootstrap(self.settings)
        try:
            users = [
                app.identity.register(
                    Context("t"), f"u{i}-{uuid.uuid4().hex[:6]}@example.com", f"U{i}", "long enough pw"
                ).id
                for i in range(4)
            ]
            actors = [Actor(u, frozenset({Role.MEMBER})) for u in users]
            ctx = Context("t", actor=actors[0])
            projects = [app.work.create_project(ctx, f"P{i}", None).id for i in range(3)]
            for p in projects:
                for u in users[1:]:
                    app.work.add_member(ctx, p, u)
            tasks: list[uuid.UUID] = []
            while self.done < self.commands:
                actor_ctx = Context("t", actor=rng.choice(actors))
                try:
                    if len(tasks) < 20 or rng.random() < 0.25:
                        tasks.append(app.work.create_task(actor_ctx, rng.choice(projects), f"T{len(tasks)}").id)
                    else:
                        task = rng.choice(tasks)
                        action = rng.choice(["assign", "unassign", "start", "complete", "reopen", "edit"])
                        match action:
                            case "assign":
                                app.work.assign_task(actor_ctx, task, rng.choice(users))
                            case "unassign":
                                app.work.unassign_task(actor_ctx, task)
                            case "edit":
                                app.work.edit_task(actor_ctx, task, {"title": f"E{self.done}"})
                            case _:
                                getattr(app.work, f"{action}_task")(actor_ctx, task)
                except DomainError:
                    pass
                self.done += 1
        finally:
            app.close()


def _chaos(
    processes: object,
    servers: EmbeddedServers,
    settings: Settings,
    workload: Workload,
    actions: list[str],
    rng: random.Random,
) -> list[str]:
    done: list[str] = []
    # On until the workload ends, and then on until every fault has struck at least once (and three in
    # all): a workload that finished quickly used to leave some fault untried, and the test to fail.
    while workload.is_alive() or not set(actions) <= set(done) or len(done) < 3:
        time.sleep(rng.uniform(0.3, 0.8))
        action = rng.choice(actions)
        match action:
            case process if process.startswith(("relay", "projector")):
                processes.kill(process)  # type: ignore[attr-defined]
                time.sleep(rng.uniform(0.05, 0.6))
                processes.start(process)  # type: ignore[attr-defined]
            case "nats":
                servers.stop_server("nats", kill=rng.random() < 0.5)
                time.sleep(rng.uniform(0.2, 1.0))
                servers.start_server("nats")
            case "redis":
                redis.Redis.from_url(settings.redis_url or "").flushall()
                servers.stop_server("redis")
                time.sleep(rng.uniform(0.2, 0.6))
                servers.start_server("redis")
        done.append(action)
    return done


def _run_with_chaos(
    settings: Settings,
    servers: EmbeddedServers,
    actions: list[str],
    commands: int,
    seed: int,
    processes_run: tuple[str, ...] = ("relay", "projector"),
    then: Callable[[], object] | None = None,
    **extra_env: str,
) -> list[str]:
    """Runs the workload under chaos, then (all processes up again) `then`, until the views catch up."""
    workload = Workload(settings, commands)
    with running(settings, *processes_run, **extra_env) as processes:
        workload.start()
        done = _chaos(processes, servers, settings, workload, actions, random.Random(seed))
        workload.join()
        assert workload.error is None, workload.error
        for name in processes_run:
            if name not in processes.procs:
                processes.start(name)
        if then is not None:
            then()
        wait_caught_up(settings, timeout=120)
    return done


def _assert_views_equal_the_log(settings: Settings) -> None:
    differences = differences_from_scratch(settings)
    assert differences == {name: [] for name in differences}, differences


@pytest.mark.timeout(400)
def test_sigkilled_relay_and_projectors_lose_nothing_and_double_nothing(
    fault_settings: Settings, own_servers: EmbeddedServers
) -> None:
    done = _run_with_chaos(fault_settings, own_servers, ["relay", "projector"], commands=2500, seed=1)
    assert len(done) >= 3, f"too few crashes to mean anything: {done}"
    with psycopg.connect(fault_settings.database_url or "") as conn:
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]  # type: ignore[index]
    assert events > 1500
    _assert_views_equal_the_log(fault_settings)


@pytest.mark.timeout(400)
def test_two_projector_processes_share_the_projections_and_survive_sigkills(
    fault_settings: Settings, own_servers: EmbeddedServers
) -> None:
    """Each projection runs where its lock is held; killing either process hands its projections to
    the other, which takes them up from their checkpoints."""
    two = ("relay", "projector#a", "projector#b")
    # Reads wait up to 10 s for their position: a killed projector's lanes pass to the other process
    # within a second or two, and the reads that span such a handover are the interesting ones.
    with (
        running_api(fault_settings, CHRONICLE_MIN_POSITION_WAIT_MS="10000") as base,
        ReadYourWrites(Api(base)) as reader,
    ):
        done = _run_with_chaos(
            fault_settings,
            own_servers,
            ["projector#a", "projector#b"],
            2500,
            seed=4,
            processes_run=two,
            then=reader.some_checked,
        )
    assert {"projector#a", "projector#b"} <= set(done), done
    assert reader.stale == [], f"X-Min-Position answered before its write was visible: {reader.stale[:5]}"
    _assert_views_equal_the_log(fault_settings)


@pytest.mark.timeout(400)
def test_two_projector_processes_share_a_partitioned_projection_and_survive_sigkills(
    fault_settings: Settings, own_servers: EmbeddedServers
) -> None:
    """With P = 4, task_list runs as four lanes, which the two processes share; either is killed
    and restarted at random while commands flow and a reader checks its writes."""
    with running(fault_settings, "projector#a", CHRONICLE_PARTITIONS="4") as processes:
        wait_active(fault_settings, *(f"projection task_list [{k}/4]" for k in range(4)))
        processes.start("projector#b")
        pids = {p.pid for p in processes.procs.values()}

        def shared() -> bool:
            owners = {int(o.rsplit("pid=", 1)[1]) for o in _partition_owners(fault_settings, "task_list")}
            assert owners == pids, f"the partitions' owners are {owners}, not both processes {pids}"
            return True

        eventually(shared, what="both processes to keep some of task_list's partitions", timeout=60)
    two = ("relay", "projector#a", "projector#b")
    with (
        running_api(fault_settings, CHRONICLE_MIN_POSITION_WAIT_MS="10000") as base,
        ReadYourWrites(Api(base)) as reader,
    ):
        done = _run_with_chaos(
            fault_settings,
            own_servers,
            ["projector#a", "projector#b", "relay"],
            2000,
            seed=9,
            processes_run=two,
            then=reader.some_checked,
            CHRONICLE_PARTITIONS="4",
        )
    assert {"projector#a", "projector#b"} <= set(done), done
    assert reader.stale == [], f"X-Min-Position answered before its write was visible: {reader.stale[:5]}"
    assert [p.part for p in _status(fault_settings, "task_list").partitions] == [0, 1, 2, 3]
    _assert_views_equal_the_log(fault_settings)


@pytest.mark.timeout(120)
def test_two_projector_processes_spread_the_projections(fault_settings: Settings) -> None:
    """Whichever process starts first takes every lock; the other then gets its share."""
    with running(fault_settings, "projector#a") as processes:
        wait_active(fault_settings, *all_roles()[1:])
        processes.start("projector#b")
        pids = {p.pid for p in processes.procs.values()}

        def spread() -> bool:
            owners = _projection_owners(fault_settings)
            assert {owners.count(pid) for pid in pids} == {4, 5}, f"not spread: {owners}"
            return True

        eventually(spread, what="the two projectors to share the projections", timeout=60)


def _status(settings: Settings, name: str) -> ProjectionStatus:
    import asyncio

    from infra.views.operations import statuses
    from projections import all_projections

    return next(r for r in asyncio.run(statuses(settings, list(all_projections()))) if r.name == name)


def _partition_owners(settings: Settings, name: str) -> list[str]:
    return [p.owner for p in _status(settings, name).partitions if p.owner]


def _projection_owners(settings: Settings) -> list[int]:
    """The process id holding each projection's lock, as `chronicle projections status` reports it."""
    import asyncio

    from infra.views.operations import statuses
    from projections import all_projections

    rows = asyncio.run(statuses(settings, list(all_projections())))
    return [int(r.owner.rsplit("pid=", 1)[1]) for r in rows if r.owner]


class ReadYourWrites(threading.Thread):
    """Edits a task over HTTP and reads it back with the edit's `X-Min-Position`, again and again:
    a 200 must show the edit (a 503 while the views catch up is allowed; an old title is not)."""

    def __init__(self, api: Api) -> None:
        super().__init__(daemon=True)
        self.api, self.halt = api, threading.Event()
        self.checked, self.stale, self.error = 0, [], None  # type: ignore[var-annotated]

    def __enter__(self) -> ReadYourWrites:
        self.user = self.api.register("Reader")
        self.project = self.api.project(self.user, "Read your writes")
        self.task_id = self.api.task(self.user, self.project, title="start")
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.halt.set()
        self.join()
        assert self.error is None, self.error

    def some_checked(self) -> None:
        """Until a few reads have answered. Under chaos most may answer 503 (a restarted projector
        takes seconds to start on a loaded machine); the ones after it has calmed down count too.
        Every one that answered must show its write."""

        def checked() -> bool:
            assert self.error is None, self.error
            assert self.checked >= 3, f"only {self.checked} reads answered"
            return True

        eventually(checked, what="a few reads with X-Min-Position to answer", timeout=60)

    def run(self) -> None:
        try:
            n = 0
            while not self.halt.is_set():
                n += 1
                edit = self.api.post(f"/v1/tasks/{self.task_id}/edit", {"title": f"edit {n}"}, self.user)
                assert edit.status_code == 200, edit.text
                read = self.api.get(f"/v1/tasks/{self.task_id}", self.user, x_min_position=edit.json()["position"])
                if read.status_code == 200:
                    self.checked += 1
                    if read.json()["title"] != f"edit {n}":
                        self.stale.append((n, read.json()["title"]))
                else:
                    assert read.status_code == 503, read.text
        except BaseException as e:  # reported by the test
            self.error = e


@pytest.mark.timeout(400)
def test_nats_restarted_mid_stream(fault_settings: Settings, own_servers: EmbeddedServers) -> None:
    done = _run_with_chaos(fault_settings, own_servers, ["nats", "relay", "projector"], commands=2000, seed=2)
    assert "nats" in done, done
    _assert_views_equal_the_log(fault_settings)


@pytest.mark.timeout(400)
def test_redis_flushed_and_restarted_views_rebuild_themselves(
    fault_settings: Settings, own_servers: EmbeddedServers
) -> None:
    done = _run_with_chaos(fault_settings, own_servers, ["redis"], commands=1500, seed=3)
    assert "redis" in done, done
    _assert_views_equal_the_log(fault_settings)


def _relay_holder(url: str) -> str | None:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND a.application_name LIKE 'chronicle relay%%'"
            " AND l.granted"
        ).fetchone()
    return None if row is None else str(row[0])


@pytest.mark.timeout(300)
def test_two_relays_one_publishes_and_the_standby_takes_over(
    fault_settings: Settings, own_servers: EmbeddedServers
) -> None:

    settings = fault_settings
    before, after = Workload(settings, 300), Workload(settings, 300)
    with running(settings, "relay#a", "relay#b", "projector") as processes:
        before.start()
        before.join()
        assert before.error is None
        wait_caught_up(settings, timeout=90)
        holder = _relay_holder(settings.database_url or "")
        assert holder is not None
        active = next(
            n for n, p in processes.procs.items() if n.startswith("relay") and holder.endswith(f"pid={p.pid}")
        )
        # Killed mid-stream: commands go on while the lock passes, and only the standby can publish them.
        after.start()
        eventually(
            lambda: after.done >= 50 or not after.is_alive(), what="50 commands after the first batch", every=0.01
        )
        processes.kill(active)
        after.join()
        assert after.error is None
        eventually(
            lambda: _relay_holder(settings.database_url or "") not in (None, holder),
            what="the standby relay to take over",
        )
        wait_caught_up(settings, timeout=90)

    assert_stream_is_the_log(settings)
    _assert_views_equal_the_log(settings)


@pytest.mark.timeout(300)
def test_a_poison_event_parks_its_projection_and_leaves_the_others_running(fault_settings: Settings) -> None:
    from eventsourcing.persistence import StoredEvent

    from infra.eventstore.recorder import ChronicleApplicationRecorder, EventStoreDatabase

    settings = fault_settings
    app = bootstrap(settings)
    owner = app.identity.register(Context("t"), f"p-{uuid.uuid4().hex[:6]}@example.com", "P", "long enough pw").id
    ctx = Context("t", actor=Actor(owner, frozenset({Role.MEMBER})))
    project = app.work.create_project(ctx, "Poisoned", None).id
    database = EventStoreDatabase(settings.database_url or "")
    bad = app.work.mapper.transcoder.encode(
        {
            "project_id": project,
            "title": "bad",
            "description": "",
            "priority": "apocalyptic",
            "due_date": None,
            "created_by": owner,
            "timestamp": datetime.now(UTC),
            "originator_topic": "domain.work:Task",
        }
    )
    (poison_at,) = (
        ChronicleApplicationRecorder(database).insert_events(
            [StoredEvent(uuid.uuid4(), 1, "domain.work:Task.Created", bad)]
        )
        or []
    )
    after = app.work.create_project(ctx, "After the poison", None).position
    database.close()
    with running(settings, "relay", "projector"):

        def parked_and_others_past() -> tuple[dict[str, str], dict[str, int], list[tuple[str, int, str]]]:
            with psycopg.connect(settings.database_url or "") as conn:
                state = dict(conn.execute("SELECT projection, state FROM projections").fetchall())
                points = dict(conn.execute("SELECT projection, position FROM projection_checkpoints").fetchall())
                letters = conn.execute("SELECT projection, position, error FROM dead_letters").fetchall()
            assert state.get("task_list") == "parked", state
            assert all(points.get(p, 0) >= (after or 0) for p in ("project_catalog", "user_directory")), points
            return state, points, letters

        state, points, letters = eventually(
            parked_and_others_past, what="task_list to park while the other views pass the poison", timeout=60
        )
        assert letters and letters[0][0] == "task_list" and letters[0][1] == poison_at
        assert "apocalyptic" in letters[0][2]
        assert points["task_list"] < poison_at, "the parked projection moved past its poison event"
        assert points["project_catalog"] >= (after or 0) and points["user_directory"] >= (after or 0)
        assert state["project_catalog"] == "running"
    app.close()


def _run_workload(settings: Settings, commands: int, partitions: int) -> None:
    workload = Workload(settings, commands)
    with running(settings, "relay", "projector", CHRONICLE_PARTITIONS=str(partitions)):
        workload.start()
        workload.join()
        assert workload.error is None, workload.error
        wait_caught_up(settings, timeout=120)


@pytest.mark.timeout(300)
def test_partitions_start_from_a_whole_view_and_another_number_takes_a_rebuild(fault_settings: Settings) -> None:
    """Unpartitioned → P needs nothing; P → another number refuses (the partitions' checkpoints
    would mean something else) until a blue/green rebuild gives a version to start from."""
    import asyncio

    from infra.views.operations import rebuild
    from projections.tasks import TaskList

    _run_workload(fault_settings, 60, partitions=1)
    _run_workload(fault_settings, 60, partitions=2)
    assert [p.part for p in _status(fault_settings, "task_list").partitions] == [0, 1]
    _assert_views_equal_the_log(fault_settings)

    three = dataclasses.replace(fault_settings, partitions=3)
    workload = Workload(fault_settings, 60)
    with running(fault_settings, "relay", "projector", CHRONICLE_PARTITIONS="3"):
        workload.start()
        workload.join()
        assert workload.error is None, workload.error
        others = [p.name for p in all_projections() if p.name != "task_list"]
        eventually(lambda: _caught_up(fault_settings, others), what="the other views to catch up", timeout=120)
        status = _status(fault_settings, "task_list")
        assert [p.part for p in status.partitions] == [0, 1], "a lane of three started on a view of two"
        assert int(status.checkpoint) < head(fault_settings.database_url or "")
        report = asyncio.run(rebuild(three, TaskList()))
        assert report.switched, report
        wait_caught_up(fault_settings, timeout=120)
        eventually(
            lambda: [p.part for p in _status(fault_settings, "task_list").partitions] == [0, 1, 2],
            what="the rebuilt version to run as three partitions",
            timeout=60,
        )
    _assert_views_equal_the_log(fault_settings)


def _caught_up(settings: Settings, names: list[str]) -> bool:
    target = head(settings.database_url or "")
    behind = {n: p for n, p in checkpoints(settings.database_url or "", settings).items() if n in names and p < target}
    assert not behind, f"behind {target}: {behind}"
    return True

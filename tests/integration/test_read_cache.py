"""The API process's cache of read-model answers (infra.views.l1) with the real pipeline: answers
come from it (the metrics say so), a write is seen at once with its position, a flushed Redis
leaves no stale answer, and the cache stays within its bound when keys are sprayed at it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

from infra.devstack.embedded import ServerUrls
from infra.devstack.scratch import create_database, drop_database
from infra.eventstore.migrate import migrate
from infra.settings import Settings
from tests.integration.http import Api, User, running_api, scrape, value
from tests.integration.pipeline import all_roles, running, wait_active
from tests.waiting import eventually

CACHE_MB = 1


@dataclass
class Stack:
    settings: Settings
    api: Api
    owner: User
    project: str


@pytest.fixture(scope="module")
def stack(servers: ServerUrls, settings: Settings) -> Iterator[Stack]:
    """An API with a small cache, relay and projectors of the module's own (database, namespace)."""
    url = create_database(servers.database_url)
    migrate(url)
    own = Settings(
        database_url=url,
        nats_url=settings.nats_url,
        redis_url=settings.redis_url,
        namespace=f"c{uuid.uuid4().hex[:8]}",
        seal_key=settings.seal_key,
    )
    try:
        # Reads wait for their position longer than the default 2 s: after a flush the projector
        # notices, lets go of the lane and replays the log, and a busy machine must not make that a 503.
        wait = {"CHRONICLE_MIN_POSITION_WAIT_MS": "15000"}
        with (
            running_api(own, CHRONICLE_L1_CACHE_MB=str(CACHE_MB), **wait) as base,
            running(own, "relay", "projector"),
        ):
            wait_active(own, *all_roles())
            api = Api(base)
            owner = api.register("Carla Cache")
            project = str(api.project(owner, "Cached"))
            yield Stack(own, api, owner, project)
            api.http.close()
    finally:
        drop_database(url)


def l1(stack: Stack, name: str) -> float:
    return value(scrape(stack.api.base), name, cache="l1")


def test_a_repeated_read_is_answered_by_the_cache_and_a_write_is_seen_at_once(stack: Stack) -> None:
    api, owner = stack.api, stack.owner
    r = api.post(f"/v1/projects/{stack.project}/tasks", {"title": "first"}, owner)
    task, at = r.json()["id"], r.json()["position"]
    assert api.get(f"/v1/tasks/{task}", owner, x_min_position=str(at)).json()["title"] == "first"
    hits = l1(stack, "chronicle_cache_hits_total")
    for _ in range(5):
        assert api.get(f"/v1/tasks/{task}", owner).json()["title"] == "first"
    assert l1(stack, "chronicle_cache_hits_total") - hits >= 10  # the task and its project, each time
    for i in range(10):
        r = api.post(f"/v1/tasks/{task}/edit", {"title": f"edit {i}"}, owner)
        got = api.get(f"/v1/tasks/{task}", owner, x_min_position=str(r.json()["position"]))
        assert got.json()["title"] == f"edit {i}" and got.headers["etag"] == f'"{r.json()["version"]}"'
    # Without a position: eventually the last edit, and never an older one after it.
    eventually(lambda: api.get(f"/v1/tasks/{task}", owner).json()["title"] == "edit 9", what="the last edit")
    assert all(api.get(f"/v1/tasks/{task}", owner).json()["title"] == "edit 9" for _ in range(5))


def test_another_caller_is_told_a_cached_project_does_not_exist(stack: Stack) -> None:
    api, owner = stack.api, stack.owner
    outsider = api.register("Otto Outside")
    for _ in range(2):  # the second answer comes from the cache: the caller's rights are checked on it too
        assert api.get(f"/v1/projects/{stack.project}", owner).status_code == 200
        assert api.get(f"/v1/projects/{stack.project}/board", owner).status_code == 200
        assert api.get(f"/v1/projects/{stack.project}", outsider).status_code == 404
        assert api.get(f"/v1/projects/{stack.project}/board", outsider).status_code == 404
    r = api.post(f"/v1/projects/{stack.project}/members", {"user_id": str(outsider.id)}, owner)
    assert (
        api.get(f"/v1/projects/{stack.project}/board", outsider, x_min_position=str(r.json()["position"])).status_code
        == 200
    )


def test_after_a_redis_flush_no_answer_is_stale(stack: Stack) -> None:
    api, owner = stack.api, stack.owner
    r = api.post(f"/v1/projects/{stack.project}/tasks", {"title": "before the flush"}, owner)
    board = f"/v1/projects/{stack.project}/board"
    before = api.get(board, owner, x_min_position=str(r.json()["position"])).json()["total"]
    assert api.get(board, owner).json()["total"] == before  # kept
    client = redis.Redis.from_url(stack.settings.redis_url or "")
    try:  # this deployment's keys only (other tests share the server)
        keys = list(client.scan_iter(match=f"{stack.settings.namespace}:*", count=1000))
        assert keys
        client.delete(*keys)
    finally:
        client.close()
    r = api.post(f"/v1/projects/{stack.project}/tasks", {"title": "after the flush"}, owner)
    # The projector rebuilds the board from the log and announces it afresh; the cache lets go.
    got = api.get(board, owner, x_min_position=str(r.json()["position"]))
    assert got.status_code == 200 and got.json()["total"] == before + 1, got.text
    eventually(lambda: api.get(board, owner).json()["total"] == before + 1, what="the rebuilt board")
    assert all(api.get(board, owner).json()["total"] == before + 1 for _ in range(5))


def test_the_cache_stays_within_its_bound_when_keys_are_sprayed(stack: Stack, admin_of: User) -> None:
    api = stack.api
    last = None
    for i in range(40):
        body = {
            "sku": f"SPRAY-{i:03d}",
            "name": f"Spray item {i}",
            "description": "x" * 150,
            "price_minor": 100 + i,
            "currency": "EUR",
        }
        r = api.post("/v1/products", body, admin_of)
        assert r.status_code == 201, r.text
        last = r.json()["position"]
    page = "/v1/products?sort=price&limit=50&min_price={}"
    assert len(api.get(page.format(0), admin_of, x_min_position=str(last)).json()["items"]) == 40
    # Each distinct filter is its own first page, about 10 KB: far more of them than 1 MiB holds.
    for low in range(400):
        assert api.get(page.format(low), admin_of).status_code == 200
    assert l1(stack, "chronicle_cache_evictions_total") > 0
    held = l1(stack, "chronicle_cache_bytes")
    assert 0 < held <= CACHE_MB * 1024 * 1024, held


@pytest.fixture
def admin_of(stack: Stack, settings: Settings) -> User:
    from commands.base import Context
    from domain.identity import Role
    from infra.bootstrap import bootstrap

    user = stack.api.register("Admin Spray")
    write = bootstrap(stack.settings)
    try:
        write.identity.grant(Context("tests.make_admin", system_actor="tests"), user.id, Role.ADMIN)
    finally:
        write.close()
    return stack.api.relogin(user)


def test_a_starting_process_reads_the_hottest_keys_first(stack: Stack) -> None:
    owner = stack.owner
    r = stack.api.post(f"/v1/projects/{stack.project}/tasks", {"title": "hot"}, owner)
    task, at = r.json()["id"], r.json()["position"]
    with running_api(stack.settings) as first:
        api = Api(first)
        assert api.get(f"/v1/tasks/{task}", owner, x_min_position=str(at)).status_code == 200
        for _ in range(5):
            assert api.get(f"/v1/tasks/{task}", owner).status_code == 200
        api.http.close()
    # It shared its hottest keys as it stopped; the next process reads them before it is asked.
    with running_api(stack.settings) as second:
        eventually(lambda: value(scrape(second), "chronicle_cache_bytes", cache="l1") > 0, what="a warm cache")
        hits = value(scrape(second), "chronicle_cache_hits_total", cache="l1")
        api = Api(second)
        assert api.get(f"/v1/tasks/{task}", owner).json()["title"] == "hot"
        assert value(scrape(second), "chronicle_cache_hits_total", cache="l1") - hits == 2  # the task and its project
        api.http.close()

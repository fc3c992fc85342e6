"""PostgreSQL and Redis stopped under a running API, on servers of the test's own: every route family
answers as it did, or 503 problem+json with Retry-After, within the dependency timeout and never a
500; routes with a second source keep answering; everything answers as before once the server is
back."""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from commands.base import Context
from domain.identity import Role
from infra.bootstrap import bootstrap
from infra.devstack.embedded import EmbeddedServers
from infra.devstack.scratch import create_database
from infra.eventstore.migrate import migrate
from infra.settings import Settings
from tests.integration.http import Api, User, assert_problem, running_api
from tests.integration.pipeline import all_roles, running, wait_active, wait_caught_up
from tests.waiting import eventually

TIMEOUT_S = 2


@dataclass
class Stack:
    servers: EmbeddedServers
    api: Api
    admin: User
    project: uuid.UUID
    before_views: httpx.Response  # a SQL query before any projector had made the views


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="chronicle-outages-") as tmp:
        servers = EmbeddedServers(Path(tmp), durable=False)
        urls = servers.start()
        try:
            url = create_database(urls.database_url)
            migrate(url)
            settings = Settings(database_url=url, nats_url=urls.nats_url, redis_url=urls.redis_url, namespace="outages")
            with running_api(settings, CHRONICLE_DEPENDENCY_TIMEOUT_S=str(TIMEOUT_S)) as base:
                api = Api(base)
                admin = api.register("Admin Person")
                write = bootstrap(settings)
                write.identity.grant(Context("tests.make_admin", system_actor="tests"), admin.id, Role.ADMIN)
                write.close()
                admin = api.relogin(admin)
                project = api.project(admin, "Outages")
                api.task(admin, project, title="Before")
                r = api.post(
                    "/v1/products", {"sku": "cup", "name": "Cup", "price_minor": 300, "currency": "EUR"}, admin
                )
                assert r.status_code == 201, r.text
                before_views = api.get(f"/v1/projects/{project}", admin)
                # Views to read: the pipeline builds them, then goes away (only the API is under test).
                with running(settings, "relay", "projector"):
                    wait_active(settings, *all_roles())
                    wait_caught_up(settings)
                yield Stack(servers, api, admin, project, before_views)
                api.http.close()
        finally:
            servers.stop()


def ask(stack: Stack) -> dict[str, httpx.Response]:
    """One request of every route family."""
    api, admin, project = stack.api, stack.admin, stack.project
    login = {"email": admin.email, "password": admin.password}
    return {
        "health": api.get("/v1/health"),
        "auth": api.post("/v1/auth/login", login),
        "command": api.post(f"/v1/projects/{project}/tasks", {"title": "During"}, admin),
        "sql query": api.get(f"/v1/projects/{project}", admin),
        "redis query": api.get(f"/v1/projects/{project}/board", admin),
        "catalog": api.get("/v1/products/CUP", admin),
        "audit": api.get("/v1/audit/events?limit=1", admin),
        "admin": api.get("/v1/admin/auth-failures?limit=1", admin),
    }


def statuses(answers: dict[str, httpx.Response]) -> dict[str, int]:
    return {family: r.status_code for family, r in answers.items()}


def during_outage(stack: Stack, baseline: dict[str, int], must_fail: set[str], must_work: set[str]) -> None:
    for family, r in ask(stack).items():
        took = r.elapsed.total_seconds()
        assert took < TIMEOUT_S + 3, f"{family} took {took:.1f}s"
        if family in must_work:
            assert r.status_code == baseline[family], f"{family}: {r.status_code} {r.text}"
        elif family == "health":  # its own body, not a problem: which check failed
            # An anonymous caller's answer may be up to a second old.
            r = eventually(
                lambda: (h := stack.api.get("/v1/health")).status_code == 503 and h, what="health", timeout=5
            )
            assert int(r.headers["Retry-After"]) >= 1, r.text
            assert r.json()["status"] == "degraded" and not all(c["ok"] for c in r.json()["checks"].values())
        elif family in must_fail or r.status_code != baseline[family]:
            assert r.status_code == 503, f"{family}: {r.status_code} {r.text}"
            assert_problem(r, 503)
            assert int(r.headers["Retry-After"]) >= 1, family


def test_postgresql_down_answers_503_and_the_api_recovers(stack: Stack) -> None:
    baseline = statuses(ask(stack))
    assert set(baseline.values()) <= {200, 201}, baseline
    stack.servers.stop_server("postgres")
    try:
        during_outage(stack, baseline, must_fail={"health", "auth", "command", "sql query", "audit"}, must_work=set())
    finally:
        stack.servers.start_server("postgres")
    eventually(lambda: statuses(ask(stack)) == baseline, what="every route to answer as before", timeout=60)


def test_redis_down_answers_503_where_redis_is_needed_and_the_api_recovers(stack: Stack) -> None:
    baseline = statuses(ask(stack))
    stack.servers.stop_server("redis")
    try:
        # The board read just now is in this API process's cache (infra.views.l1), which may answer
        # it until the process notices that the announcements are gone (at once, as their
        # connection closes); from then on only Redis could.
        board = f"/v1/projects/{stack.project}/board"
        eventually(lambda: stack.api.get(board, stack.admin).status_code == 503, what="the cache to let go", timeout=5)
        during_outage(
            stack,
            baseline,
            must_fail={"health", "auth", "redis query", "admin"},
            must_work={"command", "sql query", "catalog", "audit"},
        )
    finally:
        stack.servers.start_server("redis")
    started = time.monotonic()
    eventually(lambda: statuses(ask(stack)) == baseline, what="every route to answer as before", timeout=60)
    assert time.monotonic() - started < 60


def test_a_query_before_any_projector_made_the_views_answers_503(stack: Stack) -> None:
    assert stack.before_views.status_code == 503, stack.before_views.text
    assert_problem(stack.before_views, 503)
    assert int(stack.before_views.headers["Retry-After"]) >= 1

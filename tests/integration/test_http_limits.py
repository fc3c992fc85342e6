"""Abuse limits against a real API process with small limits: rate limits per address and per user,
the login lockout, the password-hashing pool, the bound on X-Min-Position waiters, the anonymous
health body, the record of refused authentications, security headers and CORS."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest
import redis
import redis.asyncio as aioredis

from api.limits import CountingRedisStore
from commands.base import Context
from domain.identity import Role
from infra.settings import Settings
from tests.conftest import new_namespace
from tests.integration.http import Api, User, assert_problem, running_api, scrape, value
from tests.waiting import eventually

AUTH_PER_MINUTE = 100
COMMANDS_PER_SECOND = 5
LOCK_AFTER = 3
HASH_QUEUE = 4
ORIGIN = "https://app.example.com"


@pytest.fixture(scope="module")
def limited(settings: Settings) -> Iterator[Api]:
    own = Settings(
        database_url=settings.database_url,
        nats_url=settings.nats_url,
        redis_url=settings.redis_url,
        namespace=new_namespace(),
    )
    with running_api(
        own,
        CHRONICLE_AUTH_RATE_LIMIT_PER_MINUTE=str(AUTH_PER_MINUTE),
        CHRONICLE_COMMAND_RATE_LIMIT_PER_SECOND=str(COMMANDS_PER_SECOND),
        CHRONICLE_LOGIN_LOCKOUT_AFTER=str(LOCK_AFTER),
        CHRONICLE_LOGIN_LOCKOUT_S="2",
        CHRONICLE_PASSWORD_HASH_THREADS="1",
        CHRONICLE_PASSWORD_HASH_QUEUE=str(HASH_QUEUE),
        CHRONICLE_COMMAND_THREADS="2",
        CHRONICLE_MIN_POSITION_MAX_WAITERS="1",
        CHRONICLE_MIN_POSITION_WAIT_MS="5000",
        CHRONICLE_CORS_ORIGINS=ORIGIN,
    ) as base:
        client = Api(base)
        yield client
        client.http.close()


def from_address(api: Api, address: str) -> httpx.Client:
    """A client whose requests come from another loopback address (127.0.0.0/8 is all loopback)."""
    return httpx.Client(base_url=api.base, timeout=30, transport=httpx.HTTPTransport(local_address=address))


def assert_rate_limited(r: httpx.Response, limit: int) -> None:
    assert_problem(r, 429)
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert r.headers["RateLimit-Limit"] == str(limit)
    assert r.headers["RateLimit-Remaining"] == "0"
    assert "RateLimit-Policy" in r.headers and "RateLimit-Reset" in r.headers


def test_auth_routes_are_limited_per_client_address(limited: Api) -> None:
    bad_login = {"email": "nobody@example.com", "password": ""}  # refused by its shape: cheap, still counted
    refused_before = value(scrape(limited.base), "chronicle_rate_limit_refusals_total", limit="auth")
    with from_address(limited, "127.0.0.21") as client:
        first = client.post("/v1/auth/login", json=bad_login)
        assert first.status_code == 422 and first.headers["RateLimit-Limit"] == str(AUTH_PER_MINUTE)
        remaining = int(first.headers["RateLimit-Remaining"])
        assert remaining == AUTH_PER_MINUTE - 1
        for _ in range(remaining):
            assert client.post("/v1/auth/login", json=bad_login).status_code == 422
        assert_rate_limited(client.post("/v1/auth/login", json=bad_login), AUTH_PER_MINUTE)
        assert_rate_limited(client.post("/v1/auth/refresh", json={"refresh_token": "x"}), AUTH_PER_MINUTE)
    refused = value(scrape(limited.base), "chronicle_rate_limit_refusals_total", limit="auth") - refused_before
    assert refused == 2, f"{refused} refusals counted in /metrics"
    with from_address(limited, "127.0.0.22") as other:
        assert other.post("/v1/auth/login", json=bad_login).status_code == 422


def test_commands_are_limited_per_user_and_other_users_go_on(limited: Api) -> None:
    busy, calm = limited.register("Busy Bee"), limited.register("Calm Cat")
    statuses = []
    for _ in range(COMMANDS_PER_SECOND * 4):
        r = limited.post("/v1/projects", {"name": "Spam"}, busy)
        statuses.append(r.status_code)
        if r.status_code == 429:
            assert_rate_limited(r, COMMANDS_PER_SECOND)
            assert r.headers["Retry-After"] == "1"
            break
        assert r.status_code == 201 and int(r.headers["RateLimit-Remaining"]) < COMMANDS_PER_SECOND
    assert 429 in statuses, statuses
    assert limited.post("/v1/projects", {"name": "Calm"}, calm).status_code == 201


def test_a_command_is_counted_once_in_its_users_window(limited: Api) -> None:
    """The access check counts the request in the per-user window, in its own Redis round trip, and
    the limit's middleware decides on that count: counted twice, a user's first command would find
    two gone from its window; not counted, none."""
    user = limited.register("Counted Once")

    def first_two_in_one_window() -> tuple[int, int]:
        first = limited.post("/v1/projects", {"name": "One"}, user)
        second = limited.post("/v1/projects", {"name": "Two"}, user)
        assert first.status_code == 201 and second.status_code == 201, (first.text, second.text)
        remaining = int(first.headers["RateLimit-Remaining"]), int(second.headers["RateLimit-Remaining"])
        # The window is a second long: a second command in a fresh window starts over.
        assert remaining[1] < remaining[0], "the window ended between the two commands; again"
        return remaining

    assert limited.post("/v1/projects", {"name": "Zero"}, user).headers["RateLimit-Remaining"] == str(
        COMMANDS_PER_SECOND - 1
    )
    first, second = eventually(first_two_in_one_window, what="two commands in one window", timeout=10)
    assert first - second == 1


def test_a_rate_limit_counts_exactly_across_processes(settings: Settings) -> None:
    """Two clients (as two workers would be) hitting one window at once: every count is given once."""

    async def hits() -> list[int]:
        namespace = new_namespace()  # the same counts, through two clients of their own
        stores = [CountingRedisStore(aioredis.from_url(settings.redis_url or ""), namespace) for _ in "ab"]
        key = uuid.uuid4().hex
        counts = await asyncio.gather(*(stores[i % 2].hit(key, 60) for i in range(200)))
        for store in stores:
            await store.client.aclose()
        return sorted(count for count, _ in counts)

    assert asyncio.run(hits()) == list(range(1, 201))


def test_an_account_is_locked_after_repeated_failures_whatever_the_address(limited: Api) -> None:
    user = limited.register("Locked Out")
    wrong = {"email": user.email, "password": "not the password"}
    right = {"email": user.email, "password": user.password}
    for _ in range(LOCK_AFTER):
        assert limited.post("/v1/auth/login", wrong).status_code == 401
    refused = limited.post("/v1/auth/login", right)
    assert_problem(refused, 429, says="failed logins")
    assert refused.headers["Retry-After"] in ("1", "2")
    with from_address(limited, "127.0.0.23") as elsewhere:
        assert elsewhere.post("/v1/auth/login", json=right).status_code == 429
    # The lock runs out; the next failure locks again for twice as long.
    eventually(lambda: limited.post("/v1/auth/login", wrong).status_code == 401, what="the lock to end", timeout=10)
    relocked = limited.post("/v1/auth/login", right)
    assert relocked.status_code == 429 and relocked.headers["Retry-After"] in ("3", "4")
    eventually(lambda: limited.post("/v1/auth/login", right).status_code == 200, what="a login", timeout=10)
    # A success forgets the failures: two more do not lock.
    for _ in range(LOCK_AFTER - 1):
        assert limited.post("/v1/auth/login", wrong).status_code == 401
    assert limited.post("/v1/auth/login", right).status_code == 200


def test_a_flood_of_logins_does_not_slow_the_command_routes(limited: Api) -> None:
    """Three times more logins than the API has command threads: were they hashed on those threads,
    each command would wait for several hashes."""
    worker = limited.register("Steady Worker")
    project = limited.project(worker, "Steady")

    def login(i: int) -> int:
        with from_address(limited, "127.0.0.24") as client:
            return client.post(
                "/v1/auth/login", json={"email": f"flood-{i}-{uuid.uuid4().hex}@example.com", "password": "guess it"}
            ).status_code

    flood_size = HASH_QUEUE * 3
    with ThreadPoolExecutor(flood_size) as pool:
        flood = [pool.submit(login, i) for i in range(flood_size)]
        eventually(lambda: sum(f.done() for f in flood) >= 1, what="the first refused login")
        latencies = []
        for _ in range(COMMANDS_PER_SECOND - 1):
            started = time.perf_counter()
            r = limited.post(f"/v1/projects/{project}/tasks", {"title": "during the flood"}, worker)
            latencies.append(time.perf_counter() - started)
            assert r.status_code == 201, r.text
        still_flooding = sum(not f.done() for f in flood)
        statuses = [f.result() for f in flood]
    assert still_flooding > 0, "the flood ended before the commands ran: nothing was measured"
    assert max(latencies) < 1.0, latencies
    assert set(statuses) <= {401, 503}, statuses
    assert 503 in statuses, "more logins waited than the hashing queue holds, yet none was refused"


def test_queries_waiting_for_a_position_are_bounded(limited: Api, settings: Settings) -> None:
    """One waiter allowed: of three requests at once, one waits (and runs out of time), the others
    are refused at once. The user directory is held back (its checkpoint row locked) so that the
    position, a real one, stays out of reach while they ask."""
    user = limited.register("Patient Person")
    with psycopg.connect(settings.database_url or "") as hold:
        hold.execute("SELECT 1 FROM projection_checkpoints WHERE projection = 'user_directory' FOR UPDATE")
        r = limited.post("/v1/projects", {"name": "A position to wait for"}, user)
        assert r.status_code == 201, r.text
        position = r.json()["position"]

        def ask(_: int) -> tuple[httpx.Response, float]:
            started = time.perf_counter()
            r = limited.get("/v1/me", user, X_Min_Position=position)
            return r, time.perf_counter() - started

        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(ask, range(3)))
    refused = [(r, took) for r, took in answers if "too many" in r.json()["detail"]]
    waited = [(r, took) for r, took in answers if "have not caught up" in r.json()["detail"]]
    assert len(waited) == 1 and len(refused) == 2, [r.text for r, _ in answers]
    for r, took in refused:
        assert_problem(r, 503)
        assert r.headers["Retry-After"] == "1" and took < 1.0
    assert waited[0][1] >= 5.0


def test_anonymous_health_says_only_what_passes(limited: Api, chronicle_app: Any) -> None:
    r = limited.get("/v1/health")
    assert r.status_code == 200
    body = r.json()
    assert body == {"status": body["status"], "checks": {name: {"ok": True} for name in ("database", "redis", "nats")}}
    admin = make_admin(limited, chronicle_app)
    detailed = limited.get("/v1/health", admin).json()
    assert "projections" in detailed and "latency_ms" in detailed["checks"]["database"]
    member = limited.register("Plain Member")
    assert limited.get("/v1/health", member).json().keys() == {"status", "checks"}


def test_a_flood_of_anonymous_health_requests_measures_once_a_second(limited: Api, settings: Settings) -> None:
    """Each measurement pings Redis once: thirty requests within a second or two ping it once or twice."""
    probe = redis.Redis.from_url(settings.redis_url or "")

    def pings() -> int:
        return int(probe.info("commandstats").get("cmdstat_ping", {}).get("calls", 0))

    before, started = pings(), time.monotonic()
    for _ in range(30):
        assert limited.get("/v1/health").status_code == 200
    elapsed = time.monotonic() - started
    assert pings() - before <= elapsed + 2, (pings() - before, elapsed)
    probe.close()


def make_admin(api: Api, chronicle_app: Any) -> User:
    user = api.register("Admin Person")
    chronicle_app.identity.grant(Context("tests.make_admin", system_actor="tests"), user.id, Role.ADMIN)
    return api.relogin(user)


def test_refused_authentications_are_recorded_for_admins_without_secrets(limited: Api, chronicle_app: Any) -> None:
    secret = f"secret-{uuid.uuid4().hex}"
    victim = limited.register("Victim Person")
    with from_address(limited, "127.0.0.25") as client:
        assert client.post("/v1/auth/login", json={"email": victim.email, "password": secret}).status_code == 401
        dead = f"{uuid.uuid4().hex}.{secret}"
        assert client.post("/v1/auth/refresh", json={"refresh_token": dead}).status_code == 401
        taken = {"email": victim.email, "password": secret, "name": "Impostor"}
        assert client.post("/v1/auth/register", json=taken).status_code == 409
    admin = make_admin(limited, chronicle_app)
    r = limited.get("/v1/admin/auth-failures?limit=50", admin)
    assert r.status_code == 200, r.text
    assert secret not in r.text
    mine = [f for f in r.json()["items"] if f["address"] == "127.0.0.25"]
    assert [(f["route"], f["reason"]) for f in mine] == [
        ("register", "an account with that email already exists"),
        ("refresh", "dead refresh token"),
        ("login", "invalid credentials"),
    ]
    assert mine[0]["who"] == victim.email and mine[2]["who"] == victim.email
    assert mine[1]["who"].startswith("session ")
    assert_problem(limited.get("/v1/admin/auth-failures", victim), 403)


def test_every_response_carries_security_headers_and_cors_only_for_listed_origins(limited: Api) -> None:
    user = limited.register("Header Reader")
    responses = [
        limited.post("/v1/projects", {"name": "Headers"}, user),
        limited.get("/v1/me"),  # 401 from the authentication middleware
        limited.get("/v1/nowhere", user),  # 404 from the router
        limited.post("/v1/auth/login", {"email": user.email, "password": user.password}),
    ]
    for r in responses:
        assert r.headers["X-Content-Type-Options"] == "nosniff", r.url
        assert r.headers["Referrer-Policy"] == "no-referrer"
        assert "default-src 'none'" in r.headers["Content-Security-Policy"]
    assert [r.status_code for r in responses] == [201, 401, 404, 200]
    assert responses[3].headers["Cache-Control"] == "no-store"
    docs = limited.get("/schema")
    assert docs.headers["content-type"].startswith("text/html")
    assert "script-src 'self' https://cdn.jsdelivr.net" in docs.headers["Content-Security-Policy"]
    listed = limited.get("/v1/health", Origin=ORIGIN)
    assert listed.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Access-Control-Allow-Origin" not in limited.get("/v1/health", Origin="https://evil.example").headers

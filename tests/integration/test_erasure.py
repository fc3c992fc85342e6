"""Erasure by crypto-shredding: a user with a history (projects, tasks, a paid order, an audit
export) is erased; afterwards no table, Redis key or value, JetStream message or process log holds
their email, name or payment reference, the log still verifies, every projection rebuilt from the
log matches the live views, and the email can be registered again."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import nats
import psycopg
import pytest
import redis

from commands.base import Context
from domain.identity import Role
from infra.bootstrap import bootstrap
from infra.delivery.anchors import anchor_stream, heads_from
from infra.delivery.relay import stream_name
from infra.eventstore.migrate import migrate, service_url
from infra.eventstore.signing import load_seal_key
from infra.eventstore.verify import verify
from infra.settings import Settings
from tests.conftest import new_namespace
from tests.integration.commerce import product, wait_order
from tests.integration.http import Api, User, _answering_or_exited, api_env, free_port
from tests.integration.pipeline import all_roles, differences_from_scratch, wait_active, wait_caught_up
from tests.waiting import eventually


@pytest.fixture
def stack(fresh_database_url: str, settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, Api, Path]]:
    """API, relay, projector and saga of the test's own, as the service role, logging at INFO to files."""
    migrate(fresh_database_url, service=service_url(fresh_database_url))
    own = dataclasses.replace(settings, database_url=service_url(fresh_database_url), namespace=new_namespace())
    env = api_env(own, CHRONICLE_LOG_LEVEL="INFO")
    port = free_port()
    procs = []
    for role, args in (("api", ["--port", str(port)]), ("relay", []), ("projector", []), ("saga", [])):
        out = (tmp_path / f"{role}.log").open("wb")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "api.cli", role, *args], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        )
    api = Api(f"http://127.0.0.1:{port}")
    try:
        eventually(partial(_answering_or_exited, procs[0], api.base), what="the API", timeout=60)
        assert procs[0].poll() is None, (tmp_path / "api.log").read_text()
        wait_active(own, *all_roles(saga=True))
        yield own, api, tmp_path
    finally:
        api.http.close()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


def test_an_erased_user_leaves_no_personal_data_anywhere_and_history_still_verifies(
    stack: tuple[Settings, Api, Path],
) -> None:
    settings, api, logs = stack
    tag = uuid.uuid4().hex[:10]
    name, email, payment_ref = f"Grace Hopper{tag}", f"grace-{tag}@example.com", f"PAYREF-{tag}"
    admin = _admin(api, settings)

    grace = _register(api, email, name)
    project = api.project(grace, "Compilers")
    api.task(grace, project, title="Write the manual", assignee_id=str(grace.id))
    sku, _ = product(api, admin, stock=5)
    order = api.post("/v1/orders", {"lines": [{"sku": sku, "quantity": 1}]}, grace).json()["id"]
    wait_order(api, grace, order, {"reserved"})
    paid = api.post(f"/v1/orders/{order}/pay", {"payment_ref": payment_ref}, grace)
    assert paid.status_code == 200, paid.text
    wait_caught_up(settings)
    assert api.get(f"/v1/orders/{order}", grace).json()["payment_ref"] == payment_ref
    before = api.get(f"/v1/audit/streams/{grace.id}", admin)
    assert email.encode() in before.content  # the auditor saw it while it existed

    erased = api.post(f"/v1/users/{grace.id}/erase", None, grace)
    assert erased.status_code == 200, erased.text
    wait_caught_up(settings)

    shown = api.get(f"/v1/users/{grace.id}", admin).json()
    assert shown["name"] is None and shown.get("email") is None and shown["erased"] is True
    assert api.get(f"/v1/orders/{order}", admin).json()["payment_ref"] is None
    exported = [
        json.loads(line)
        for line in api.http.get(
            "/v1/audit/export", params={"type": "User.Registered"}, headers=admin.auth
        ).text.splitlines()
    ]
    registered = next(e for e in exported if e["stream_id"] == str(grace.id))
    assert registered["erased"] is True and registered["data"]["email"] is None and registered["data"]["name"] is None

    state = api.http.get(f"/v1/audit/streams/{grace.id}/state", params={"version": 1}, headers=admin.auth).json()
    assert state["erased"] is True and state["state"]["email"] is None and state["state"]["name"] is None
    needles = [email.encode(), name.encode(), payment_ref.encode()]
    found = _scan(settings, logs, needles)
    assert found == [], found

    trusted = [load_seal_key(settings.seal_key, settings.seal_key_file).public]
    heads, _ = asyncio.run(heads_from(settings.nats_url or "", settings.namespace))
    report = verify(settings.database_url or "", trusted, heads)
    assert report.ok, report.first_problem
    assert differences_from_scratch(settings) == {name: [] for name in differences_from_scratch(settings)}

    again = api.post("/v1/auth/register", {"email": email, "password": "another password", "name": "Someone Else"})
    assert again.status_code == 201, again.text
    assert api.post("/v1/auth/login", {"email": email, "password": "correct horse battery"}).status_code == 401
    someone = api.login(uuid.UUID(again.json()["id"]), email, "another password")
    assert api.get("/v1/me", someone, x_min_position=again.json()["position"]).json()["name"] == "Someone Else"


def _register(api: Api, email: str, name: str) -> User:
    r = api.post("/v1/auth/register", {"email": email, "password": "correct horse battery", "name": name})
    assert r.status_code == 201, r.text
    return api.login(uuid.UUID(r.json()["id"]), email, "correct horse battery")


def _admin(api: Api, settings: Settings) -> User:
    user = api.register("Admin Person")
    app = bootstrap(settings)
    try:
        app.identity.grant(Context("tests.make_admin", system_actor="tests"), user.id, Role.ADMIN)
    finally:
        app.close()
    return api.relogin(user)


def _scan(settings: Settings, logs: Path, needles: list[bytes]) -> list[str]:
    """Where any needle (or its hex form, as bytea prints) is found: every table of the database,
    every Redis key and value, every message of the namespace's JetStream streams, the process logs."""
    forms = [n for needle in needles for n in (needle, needle.hex().encode())]
    found: list[str] = []

    def look(where: str, blob: bytes) -> None:
        found.extend(f"{where}: {form.decode()}" for form in forms if form in blob)

    for where, blob in _tables(settings.database_url or ""):
        look(where, blob)
    client = redis.Redis.from_url(settings.redis_url or "")
    for key in client.scan_iter(count=1000):
        look(f"redis {key!r}", key + repr(_redis_value(client, key)).encode())
    client.close()
    for stream, blob in asyncio.run(_messages(settings)):
        look(f"jetstream {stream}", blob)
    for log in logs.glob("*.log"):
        look(f"log {log.name}", log.read_bytes())
    return found


def _redis_value(client: redis.Redis, key: bytes) -> Any:
    match client.type(key):
        case b"string":
            return client.get(key)
        case b"hash":
            return client.hgetall(key)
        case b"set":
            return client.smembers(key)
        case b"zset":
            return client.zrange(key, 0, -1, withscores=True)
        case b"list":
            return client.lrange(key, 0, -1)
        case b"stream":
            return client.xrange(key)
    return b""


def _tables(url: str) -> list[tuple[str, bytes]]:
    """Every table's rows as PostgreSQL's binary COPY writes them (what pg_dump would carry)."""
    out = []
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        for schema, table in tables:
            blob = b""
            with conn.cursor().copy(f'COPY "{schema}"."{table}" TO STDOUT (FORMAT binary)'.encode()) as copy:
                for chunk in copy:
                    blob += bytes(chunk)
            out.append((f"table {schema}.{table}", blob))
    return out


async def _messages(settings: Settings) -> list[tuple[str, bytes]]:
    nc = await nats.connect(servers=(settings.nats_url or "").split(","))
    out = []
    try:
        js = nc.jetstream()
        for stream in (stream_name(settings.namespace), anchor_stream(settings.namespace)):
            info = await js.stream_info(stream)
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await js.get_msg(stream, seq)
                out.append((stream, (msg.data or b"") + repr(msg.headers).encode()))
    finally:
        await nc.close()
    return out


def test_only_the_user_themselves_or_an_admin_may_erase_and_only_once(
    api: Api, admin: User, settings: Settings
) -> None:
    ada, bob, cy = api.register("Ada Erasable"), api.register("Bob Bystander"), api.register("Cy Cli")
    assert api.post(f"/v1/users/{ada.id}/erase", None, bob).status_code == 403
    assert api.post(f"/v1/users/{uuid.uuid4()}/erase", None, admin).status_code == 404
    assert api.post(f"/v1/users/{ada.id}/erase", None, ada).status_code == 200
    assert api.post(f"/v1/users/{ada.id}/erase", None, admin).status_code == 409
    assert api.post("/v1/auth/login", {"email": ada.email, "password": ada.password}).status_code == 401
    erased = subprocess.run(
        [sys.executable, "-m", "api.cli", "users", "erase", cy.email], env=api_env(settings), capture_output=True
    )
    assert erased.returncode == 0, erased.stderr
    assert cy.email.encode() not in erased.stdout + erased.stderr
    assert api.post("/v1/auth/login", {"email": cy.email, "password": cy.password}).status_code == 401

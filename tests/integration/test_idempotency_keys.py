"""An Idempotency-Key's stored request hash is an HMAC under the server's key that never covers a
password, and a key is forgotten after its time to live (24 h by default)."""

from __future__ import annotations

import hashlib
import hmac
import uuid

import msgspec
import psycopg

from infra.eventstore.idempotency import IdempotencyKeys
from infra.eventstore.recorder import EventStoreDatabase
from infra.settings import Settings
from tests.integration.http import JWT_SECRET, Api


def stored_hash(settings: Settings, key: str) -> bytes:
    with psycopg.connect(settings.database_url or "") as conn:
        row = conn.execute("SELECT request_hash FROM idempotency_keys WHERE key = %s", (key,)).fetchone()
    assert row is not None
    return bytes(row[0])


def test_the_request_hash_is_an_hmac_that_leaves_the_password_out(api: Api, settings: Settings) -> None:
    key = uuid.uuid4().hex
    body = {"email": f"idem-{uuid.uuid4().hex[:8]}@example.com", "password": "first secret pw", "name": "Idem"}
    first = api.post("/v1/auth/register", body, idempotency_key=key)
    assert first.status_code == 201

    public = msgspec.json.encode({"email": body["email"], "name": "Idem"}, order="sorted")
    server_key = hmac.new(JWT_SECRET.encode(), b"chronicle idempotency request hash", hashlib.sha256).digest()
    message = b"POST /v1/auth/register\n" + public
    assert stored_hash(settings, key) == hmac.new(server_key, message, hashlib.sha256).digest()
    with_password = msgspec.json.encode(body, order="sorted")
    assert stored_hash(settings, key) != hashlib.sha256(b"POST /v1/auth/register\n" + with_password).digest()

    again = api.post("/v1/auth/register", {**body, "password": "another secret"}, idempotency_key=key)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json(), "the password is no part of what the key compares"
    other = api.post("/v1/auth/register", {**body, "name": "Someone Else"}, idempotency_key=key)
    assert other.status_code == 422


def test_a_key_is_forgotten_after_its_time_to_live(api: Api, settings: Settings) -> None:
    user = api.register("Kim Keys")
    key = uuid.uuid4().hex
    first = api.post("/v1/projects", {"name": "Once"}, user, idempotency_key=key)
    assert api.post("/v1/projects", {"name": "Once"}, user, idempotency_key=key).json() == first.json()
    with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
        conn.execute("UPDATE idempotency_keys SET created_at = now() - interval '23 hours' WHERE key = %s", (key,))
        assert api.post("/v1/projects", {"name": "Once"}, user, idempotency_key=key).json() == first.json()
        conn.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = %s", (key,))
    later = api.post("/v1/projects", {"name": "Once"}, user, idempotency_key=key)
    assert later.status_code == 201 and "Idempotent-Replayed" not in later.headers
    assert later.json()["id"] != first.json()["id"], "an expired key runs the command anew"
    assert api.post("/v1/projects", {"name": "Once"}, user, idempotency_key=key).json() == later.json()


def test_expired_keys_are_purged(settings: Settings) -> None:
    database = EventStoreDatabase(settings.database_url or "", pool_size=1)
    keys = IdempotencyKeys(database, ttl_s=3600)
    stale = uuid.uuid4().hex
    with database.connection() as conn:
        conn.execute(
            "INSERT INTO idempotency_keys (scope, key, request_hash, status, aggregate_id, version, position,"
            " created_at) VALUES ('tests', %s, '\\x00', 200, %s, 1, 1, now() - interval '2 hours')",
            (stale, uuid.uuid4()),
        )
    assert keys.purge_expired() >= 1
    with database.connection() as conn:
        assert conn.execute("SELECT count(*) FROM idempotency_keys WHERE key = %s", (stale,)).fetchone() == (0,)
    database.close()

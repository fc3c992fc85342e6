"""Sessions end when they should, on the very next request of every access token: logout, role
changes, password changes, a reused refresh token; and a session's absolute lifetime."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import redis

from commands.base import Context
from commands.identity import Unauthorized
from domain.identity import Session
from infra.bootstrap import bootstrap
from infra.sessions import HELD, STORE, session_key, user_key
from infra.settings import Settings
from tests.integration.http import Api, User, assert_problem


def works(api: Api, user: User) -> bool:
    """Whether the user's access token is honoured (a command that any user may send)."""
    r = api.post("/v1/projects", {"name": "Still here"}, user)
    assert r.status_code in (201, 401), r.text
    return r.status_code == 201


def second_session(api: Api, user: User) -> User:
    return api.relogin(user)


def event_types(settings: Settings, stream_id: uuid.UUID) -> list[str]:
    with psycopg.connect(settings.database_url or "") as conn:
        rows = conn.execute("SELECT type FROM events WHERE stream_id = %s ORDER BY version", (stream_id,)).fetchall()
    return [r[0] for r in rows]


def session_id(user: User) -> uuid.UUID:
    return uuid.UUID(hex=user.refresh_token.partition(".")[0])


def test_logging_out_ends_every_access_token_of_that_session_at_once(api: Api) -> None:
    user = api.register("Lena Logout")
    other = second_session(api, user)
    assert works(api, user) and works(api, other)
    assert api.post("/v1/auth/logout", user=user).status_code == 200
    assert_problem(api.post("/v1/projects", {"name": "After logout"}, user), 401, says="ended")
    assert works(api, other), "the user's other session lives on"


def test_granting_and_revoking_a_role_reach_a_live_token_on_its_next_request(api: Api, admin: User) -> None:
    user = api.register("Greta Grant")
    product = {"sku": f"G-{uuid.uuid4().hex[:8]}", "name": "Mug", "price_minor": 100, "currency": "EUR"}
    assert_problem(api.post("/v1/products", product, user), 403)
    assert api.post(f"/v1/users/{user.id}/roles", {"role": "manager"}, admin).status_code == 200
    assert api.post("/v1/products", product, user).status_code == 201, "the same token, the new role"
    assert api.delete(f"/v1/users/{user.id}/roles/manager", admin).status_code == 200
    assert_problem(api.post("/v1/products", {**product, "sku": product["sku"] + "X"}, user), 403)


def test_changing_the_password_ends_every_other_session_of_the_user(api: Api) -> None:
    user = api.register("Pat Password", password="first password")
    other = second_session(api, user)
    body = {"current_password": "first password", "new_password": "second password"}
    assert_problem(api.post("/v1/auth/password", {**body, "current_password": "a wrong guess"}, user), 403)
    assert_problem(api.post("/v1/auth/password", {**body, "new_password": "short"}, user), 422, field="new_password")
    assert works(api, other), "a refused change ends nothing"

    r = api.post("/v1/auth/password", body, user)
    assert r.status_code == 200 and set(r.json()) == {"id", "version", "position"}
    assert works(api, user), "the session that changed it lives on"
    assert not works(api, other)
    assert_problem(api.post("/v1/auth/refresh", {"refresh_token": other.refresh_token}), 401)
    assert api.post("/v1/auth/refresh", {"refresh_token": user.refresh_token}).status_code == 200
    assert_problem(api.post("/v1/auth/login", {"email": user.email, "password": "first password"}), 401)
    assert api.post("/v1/auth/login", {"email": user.email, "password": "second password"}).status_code == 200


def test_a_refresh_token_used_twice_ends_its_session_and_is_recorded(api: Api, settings: Settings) -> None:
    owner = api.register("Olga Owner")
    r = api.post("/v1/auth/refresh", {"refresh_token": owner.refresh_token})
    assert r.status_code == 200
    owners_next = r.json()
    stolen = owner.refresh_token
    assert_problem(api.post("/v1/auth/refresh", {"refresh_token": stolen}), 401)  # the thief
    assert_problem(api.post("/v1/auth/refresh", {"refresh_token": owners_next["refresh_token"]}), 401)  # the owner
    assert_problem(api.post("/v1/auth/refresh", {"refresh_token": stolen}), 401)
    refreshed = User(owner.id, owner.email, owner.password, owners_next["access_token"], owners_next["refresh_token"])
    assert not works(api, refreshed) and not works(api, owner), "the session's access tokens die with it"
    types = event_types(settings, session_id(owner))
    assert types == ["Session.Started", "Session.Rotated", "Session.RefreshTokenReused"]
    assert works(api, api.relogin(owner)), "logging in again starts a new session"


def test_an_unknown_refresh_token_of_a_live_session_does_not_end_it(api: Api, settings: Settings) -> None:
    user = api.register("Una Unknown")
    forged = f"{session_id(user).hex}.not-a-token-it-ever-had"
    assert_problem(api.post("/v1/auth/refresh", {"refresh_token": forged}), 401)
    assert api.post("/v1/auth/refresh", {"refresh_token": user.refresh_token}).status_code == 200
    assert "Session.RefreshTokenReused" not in event_types(settings, session_id(user))


def test_a_missing_access_state_is_read_from_postgresql_and_filled_in(api: Api, settings: Settings) -> None:
    user = api.register("Mia Missing")
    client = redis.Redis.from_url(settings.redis_url or "")
    keys = [user_key(settings.namespace, user.id), session_key(settings.namespace, session_id(user))]
    assert client.exists(*keys) == 2, "login fills both"
    client.delete(*keys)
    assert works(api, user)
    assert client.exists(*keys) == 2
    assert api.post("/v1/auth/logout", user=user).status_code == 200
    client.delete(*keys)
    assert not works(api, user), "the event store says the session ended"
    client.close()


def test_a_fill_never_replaces_a_hold_or_a_newer_state(settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_url or "")
    store = client.register_script(STORE)
    key = f"{settings.namespace}:access:test:{uuid.uuid4().hex}"

    def put(version: int, *, replace_hold: bool) -> Any:
        store(keys=[key], args=[version, f"{version} state", 60, int(replace_hold)])
        return client.get(key)

    assert put(3, replace_hold=False) == b"3 state"
    assert put(2, replace_hold=False) == b"3 state", "an older state never replaces a newer one"
    client.set(key, HELD)
    assert put(4, replace_hold=False) == HELD, "a reader's fill leaves a writer's hold alone"
    assert put(4, replace_hold=True) == b"4 state", "the writer replaces its hold"
    client.delete(key)
    client.close()


@pytest.fixture
def clocked(settings: Settings) -> Any:
    """The write side with a clock the test moves, and short lifetimes from the settings."""
    app = bootstrap(replace(settings, refresh_token_ttl_s=3600, session_max_age_s=3 * 3600))
    now = [datetime.now(UTC)]
    app.identity.clock = lambda: now[0]
    yield app, now
    app.close()


def test_refresh_tokens_expire_by_the_setting_and_sessions_end_at_their_absolute_lifetime(clocked: Any) -> None:
    app, now = clocked
    email = f"clock-{uuid.uuid4().hex[:8]}@example.com"
    app.identity.register(Context("tests"), email, "Clara Clock", "correct horse battery")
    started = now[0]
    token = app.identity.login(Context("tests"), email, "correct horse battery").refresh_token
    session = app.identity.load(Session, uuid.UUID(hex=token.partition(".")[0]), "session", fresh=True)
    assert session.expires_at == started + timedelta(hours=1), "CHRONICLE_REFRESH_TOKEN_TTL_S"
    assert session.ends_at == started + timedelta(hours=3), "CHRONICLE_SESSION_MAX_AGE_S"

    now[0] = started + timedelta(minutes=61)
    with pytest.raises(Unauthorized):
        app.identity.refresh(Context("tests"), token)

    token = app.identity.login(Context("tests"), email, "correct horse battery").refresh_token
    for minutes in (50, 100, 150):  # rotating every 50 minutes keeps the refresh token alive...
        now[0] = started + timedelta(minutes=61 + minutes)
        token = app.identity.refresh(Context("tests"), token).refresh_token
    now[0] = started + timedelta(minutes=61 + 181)  # ...but not past three hours from the login
    with pytest.raises(Unauthorized):
        app.identity.refresh(Context("tests"), token)

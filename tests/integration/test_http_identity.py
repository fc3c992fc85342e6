"""Identity's command routes over HTTP against a real `chronicle api` process and real servers."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from typing import Any

import jwt
import psycopg

from infra.settings import Settings
from tests.integration.http import JWT_SECRET, Api, User, api_env, assert_problem


def test_register_returns_id_version_and_position(api: Api) -> None:
    r = api.post(
        "/v1/auth/register",
        {"email": f"new-{uuid.uuid4().hex[:8]}@example.com", "password": "long enough password", "name": "New Person"},
    )
    assert r.status_code == 201
    body = r.json()
    assert set(body) == {"id", "version", "position"}
    assert uuid.UUID(body["id"]) and body["version"] == 1 and isinstance(body["position"], str)


def test_email_is_unique_case_insensitively(api: Api) -> None:
    email = f"Grace-{uuid.uuid4().hex[:8]}@Example.com"
    assert api.post("/v1/auth/register", {"email": email, "password": "long enough 1", "name": "G"}).status_code == 201
    r = api.post("/v1/auth/register", {"email": email.lower(), "password": "long enough 2", "name": "G2"})
    assert_problem(r, 409, says="already exists")


def test_register_rejects_bad_input_naming_the_field(api: Api) -> None:
    good = {"email": f"x-{uuid.uuid4().hex[:8]}@example.com", "password": "long enough password", "name": "X"}
    assert_problem(api.post("/v1/auth/register", {**good, "email": "not-an-email"}), 422, field="email")
    assert_problem(api.post("/v1/auth/register", {**good, "password": "short"}), 422, field="password")
    assert_problem(api.post("/v1/auth/register", {**good, "name": "   "}), 422, field="name")
    assert_problem(api.post("/v1/auth/register", {**good, "admin": True}), 422, field="admin")
    assert_problem(api.post("/v1/auth/register", {"email": good["email"], "name": "X"}), 422, field="password")
    assert_problem(api.post("/v1/auth/register", {**good, "name": 42}), 422, field="name")
    r = api.http.post("/v1/auth/register", content=b'{"email": ', headers={"content-type": "application/json"})
    assert_problem(r, 400)
    r = api.http.post("/v1/auth/register", content=b"[1, 2]", headers={"content-type": "application/json"})
    assert_problem(r, 400)
    big = {**good, "name": "x" * (1024 * 1024)}
    assert_problem(api.post("/v1/auth/register", big), 413)


def test_login_gives_a_bearer_pair_and_refuses_bad_credentials(api: Api) -> None:
    user = api.register("Linus Login")
    r = api.post("/v1/auth/login", {"email": user.email.upper(), "password": user.password})
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "bearer" and body["expires_in"] > 0
    assert body["access_token"] and body["refresh_token"]
    assert_problem(api.post("/v1/auth/login", {"email": user.email, "password": "wrong password"}), 401)
    assert_problem(api.post("/v1/auth/login", {"email": "nobody@example.com", "password": "whatever it is"}), 401)


def test_refresh_rotates_and_a_used_refresh_token_is_dead(api: Api) -> None:
    user = api.register("Rita Refresh")
    r = api.post("/v1/auth/refresh", {"refresh_token": user.refresh_token})
    assert r.status_code == 200
    pair = r.json()
    assert pair["refresh_token"] != user.refresh_token
    r = api.post("/v1/auth/refresh", {"refresh_token": pair["refresh_token"]})
    assert r.status_code == 200
    assert_problem(api.post("/v1/auth/refresh", {"refresh_token": "garbage"}), 401)
    assert_problem(api.post("/v1/auth/refresh", {"refresh_token": f"{uuid.uuid4().hex}.nope"}), 401)
    fresh = User(user.id, user.email, user.password, r.json()["access_token"], r.json()["refresh_token"])
    assert api.post("/v1/projects", {"name": "With refreshed token"}, fresh).status_code == 201
    assert_problem(api.post("/v1/auth/refresh", {"refresh_token": user.refresh_token}), 401)


def test_logout_ends_the_session(api: Api) -> None:
    user = api.register("Lou Logout")
    r = api.post("/v1/auth/logout", user=user)
    assert r.status_code == 200 and set(r.json()) == {"id", "version", "position"}
    assert_problem(api.post("/v1/auth/refresh", {"refresh_token": user.refresh_token}), 401)
    assert_problem(api.post("/v1/auth/logout"), 401)


def test_missing_malformed_and_expired_tokens_are_401(api: Api) -> None:
    user = api.register("Tom Token")
    assert_problem(api.post("/v1/projects", {"name": "x"}), 401)
    assert_problem(api.http.post("/v1/projects", json={"name": "x"}, headers={"Authorization": "Bearer nonsense"}), 401)
    expired = jwt.encode(
        {
            "sub": str(user.id),
            "exp": int(time.time()) - 60,
            "iat": int(time.time()) - 120,
            "extras": {"roles": ["member"], "sid": uuid.uuid4().hex},
        },
        JWT_SECRET,
        algorithm="HS256",
    )
    assert_problem(
        api.http.post("/v1/projects", json={"name": "x"}, headers={"Authorization": f"Bearer {expired}"}), 401
    )
    forged = jwt.encode(
        {"sub": str(user.id), "exp": int(time.time()) + 600, "iat": int(time.time()), "extras": {"roles": ["admin"]}},
        "another-secret-" * 4,
        algorithm="HS256",
    )
    assert_problem(
        api.http.post(
            f"/v1/users/{user.id}/roles", json={"role": "admin"}, headers={"Authorization": f"Bearer {forged}"}
        ),
        401,
    )


def test_the_password_hash_never_reaches_a_response(api: Api, settings: Settings) -> None:
    user = api.register("Hannah Hash")
    responses = [
        api.post("/v1/auth/login", {"email": user.email, "password": user.password}),
        api.post("/v1/auth/refresh", {"refresh_token": user.refresh_token}),
    ]
    assert all("argon2" not in r.text for r in responses)
    with psycopg.connect(settings.database_url or "") as conn:
        (data,) = conn.execute(
            "SELECT data FROM events WHERE stream_id = %s AND version = 1", (user.id,)
        ).fetchone() or (b"",)
    assert b"$argon2id$" in bytes(data), "the hash is stored (argon2id) in the user's own stream"


def test_admins_grant_and_revoke_roles(api: Api, admin: User) -> None:
    user = api.register("Manny Manager")
    r = api.post(f"/v1/users/{user.id}/roles", {"role": "manager"}, admin)
    assert r.status_code == 200 and r.json()["version"] == 2
    assert_problem(api.post(f"/v1/users/{user.id}/roles", {"role": "manager"}, admin), 409)
    assert_problem(api.post(f"/v1/users/{user.id}/roles", {"role": "overlord"}, admin), 422, field="role")
    assert_problem(api.post(f"/v1/users/{uuid.uuid4()}/roles", {"role": "manager"}, admin), 404)
    assert_problem(api.post(f"/v1/users/{user.id}/roles", {"role": "auditor"}, admin, if_match="1"), 412)
    assert api.post(f"/v1/users/{user.id}/roles", {"role": "auditor"}, admin, if_match="2").status_code == 200
    assert api.delete(f"/v1/users/{user.id}/roles/auditor", admin).status_code == 200
    assert_problem(api.delete(f"/v1/users/{user.id}/roles/auditor", admin), 409)
    assert_problem(api.delete(f"/v1/users/{user.id}/roles/member", admin), 422, field="role")
    assert_problem(api.delete(f"/v1/users/{user.id}/roles/overlord", admin), 422, field="role")


def test_only_admins_grant_roles_and_registering_never_makes_an_admin(api: Api) -> None:
    user, other = api.register("Mallory"), api.register("Victim")
    assert_problem(api.post(f"/v1/users/{other.id}/roles", {"role": "admin"}, user), 403)
    assert_problem(api.post(f"/v1/users/{user.id}/roles", {"role": "admin"}, user), 403)
    assert_problem(api.delete(f"/v1/users/{other.id}/roles/manager", user), 403)
    r = api.post(
        "/v1/auth/register",
        {
            "email": f"a-{uuid.uuid4().hex[:6]}@example.com",
            "password": "long enough 1",
            "name": "A",
            "roles": ["admin"],
        },
    )
    assert_problem(r, 422, field="roles")
    claims = jwt.decode(user.token, JWT_SECRET, algorithms=["HS256"], audience="chronicle-api", issuer="chronicle")
    assert claims["extras"]["roles"] == ["member"]


def test_the_first_admin_is_made_from_the_command_line(api: Api, settings: Settings) -> None:
    user = api.register("Root Admin")
    out = subprocess.run(
        [sys.executable, "-m", "api.cli", "users", "grant", user.email, "admin"],
        env=api_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "admin" in out.stdout
    admin = api.relogin(user)
    other = api.register("Promoted")
    assert api.post(f"/v1/users/{other.id}/roles", {"role": "manager"}, admin).status_code == 200
    unknown = subprocess.run(
        [sys.executable, "-m", "api.cli", "users", "grant", "nobody@example.com", "admin"],
        env=api_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unknown.returncode == 2 and "no user" in unknown.stderr


def test_every_command_route_is_tagged_and_declares_its_errors(api: Api) -> None:
    spec: dict[str, Any] = api.get("/schema/openapi.json").json()
    commands = [
        (path, method, op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in ("post", "delete")
    ]
    assert len(commands) == 32  # with the OAuth2 token endpoint
    assert {
        "/v1/users/{user_id}/erase",
        "/v1/products",
        "/v1/products/{sku}/edit",
        "/v1/products/{sku}/reprice",
        "/v1/products/{sku}/discontinue",
        "/v1/inventory/{sku}/receive",
        "/v1/inventory/{sku}/adjust",
        "/v1/orders",
        "/v1/orders/{order_id}/pay",
        "/v1/orders/{order_id}/ship",
        "/v1/orders/{order_id}/deliver",
        "/v1/orders/{order_id}/cancel",
    } <= {path for path, _, _ in commands}
    queries = [op for item in spec["paths"].values() for method, op in item.items() if method == "get"]
    assert all(op["tags"] in (["queries"], ["health"], ["audit"], ["admin"]) for op in queries)
    for path, method, op in commands:
        assert op["tags"] == ["commands"], (path, method)
        assert op["operationId"][0].isupper(), (path, method)
        declared = set(op["responses"])
        assert {"200", "201"} & declared, (path, method)
        assert "422" in declared or "409" in declared or "401" in declared, (path, method)

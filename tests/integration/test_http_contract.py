"""What the fuzzer found, pinned: any method on any path, the OAuth2 token endpoint (RFC 6749),
parameters named as the client sent them."""

from __future__ import annotations

import uuid

import pytest

from tests.integration.http import Api, User, assert_problem

USER = uuid.uuid4()
GUARDED = ["/v1/audit/events", f"/v1/users/{USER}/roles", "/v1/projects", "/v1/me"]
"""Named without the random id: the test workers (pytest-xdist) must collect the same test names."""


@pytest.mark.parametrize("path", GUARDED, ids=lambda path: path.replace(str(USER), "{user_id}"))
def test_options_on_a_guarded_path_answers_its_methods_without_a_token(api: Api, path: str) -> None:
    r = api.http.options(path)
    assert r.status_code == 204 and "OPTIONS" in r.headers["allow"], r.text


@pytest.mark.parametrize("method", ["HEAD", "PUT", "PATCH", "TRACE", "FROBNICATE"])
def test_a_method_a_path_does_not_have_is_405_with_allow(api: Api, method: str) -> None:
    r = api.http.request(method, "/v1/audit/events")
    assert r.status_code == 405, (r.status_code, r.headers)
    assert {m.strip() for m in r.headers["allow"].split(",")} == {"GET", "OPTIONS"}
    if method != "HEAD":
        assert_problem(r, 405)


def test_odd_headers_and_wrong_bodies_are_4xx(api: Api, pipeline: None) -> None:
    user = api.register("Odd Headers")
    project = api.project(user)
    odd = {**user.auth, "If-Match": 'W/"x"', "X-Correlation-Id": "not-a-uuid"}
    assert_problem(api.http.post(f"/v1/projects/{project}/rename", json={"name": "x"}, headers=odd), 400)
    for body in ([], "a string", 3, None, {"name": 3}, {"name": ["x"]}):
        r = api.http.post("/v1/projects", json=body, headers=user.auth)
        assert r.status_code in (400, 422) and r.headers["content-type"] == "application/problem+json", r.text
    assert_problem(api.http.get("/v1/me", headers={**user.auth, "X-Min-Position": "99999999999999"}), 422)


def test_the_token_endpoint_grants_by_password_and_by_refresh_token(api: Api, pipeline: None) -> None:
    user = api.register("Oauth Client")
    r = api.http.post(
        "/v1/auth/token", data={"grant_type": "password", "username": user.email, "password": user.password}
    )
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store", r.text
    pair = r.json()
    assert pair["token_type"] == "bearer" and pair["expires_in"] > 0
    assert api.get("/v1/me", User(user.id, user.email, user.password, pair["access_token"], "")).status_code == 200
    again = api.http.post(
        "/v1/auth/token", data={"grant_type": "refresh_token", "refresh_token": pair["refresh_token"]}
    )
    assert again.status_code == 200 and again.json()["refresh_token"] != pair["refresh_token"], again.text
    reused = api.http.post(
        "/v1/auth/token", data={"grant_type": "refresh_token", "refresh_token": pair["refresh_token"]}
    )
    assert (reused.status_code, reused.json()["error"]) == (400, "invalid_grant")


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"grant_type": "password", "username": "nobody@example.com", "password": "wrong password"}, "invalid_grant"),
        ({"grant_type": "password", "username": "nobody@example.com"}, "invalid_request"),
        ({"grant_type": "refresh_token"}, "invalid_request"),
        ({"grant_type": "client_credentials"}, "unsupported_grant_type"),
        ({}, "invalid_request"),
    ],
)
def test_a_bad_token_request_gets_an_oauth2_error(api: Api, form: dict[str, str], error: str) -> None:
    r = api.http.post("/v1/auth/token", data=form)
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/json"), r.text
    assert r.json()["error"] == error and r.json()["error_description"]


def test_a_bad_audit_time_names_the_query_parameter(api: Api, admin: User) -> None:
    for name in ("from", "to"):
        body = assert_problem(api.get(f"/v1/audit/events?{name}=0.5", admin), 422)
        assert [e["field"] for e in body["errors"]] == [name], body
    assert_problem(api.get("/v1/audit/events?from=2026-11-27T09:00:00", admin), 422, field="from")
    assert api.get("/v1/audit/events?from=2026-11-27T09:00:00Z&limit=1", admin).status_code == 200

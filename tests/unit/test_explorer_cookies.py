"""The explorer's cookies are Secure exactly when the request came over TLS, and always HttpOnly,
SameSite=Strict and limited to /explorer (api.explorer.session: one middleware stack per scheme)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from litestar import Litestar, Request, Router, get
from litestar.middleware import DefineMiddleware
from litestar.testing import TestClient

from api.explorer.session import CSRF_COOKIE, PUBLIC, SESSION_COOKIE, ByScheme, session_actor

SECRET = "unit-test-secret-" + "x" * 32


@get("/explorer/login", opt={PUBLIC: True})
async def sign_in(request: Request[Any, Any, Any]) -> str:
    request.set_session({"user": "00000000-0000-0000-0000-000000000001", "roles": ["auditor"], "since": 0})
    return "ok"


def app() -> Litestar:
    return Litestar(
        [Router("/", route_handlers=[sign_in], middleware=[DefineMiddleware(ByScheme, secret=SECRET, ttl_s=600)])]
    )


def cookies(base_url: str) -> dict[str, str]:
    with TestClient(app(), base_url=base_url) as client:
        response = client.get("/explorer/login")
        assert response.status_code == 200, response.text
        return {
            header.split("=", 1)[0]: header.lower()
            for header in response.headers.get_list("set-cookie")
            if header.startswith((SESSION_COOKIE, CSRF_COOKIE))
        }


def test_cookies_over_tls_are_secure() -> None:
    found = cookies("https://explorer.example")
    assert set(found) == {SESSION_COOKIE, CSRF_COOKIE}
    for header in found.values():
        assert "; secure" in header and "httponly" in header and "samesite=strict" in header
        assert "path=/explorer" in header


def test_cookies_over_plain_http_are_not_secure_but_still_strict() -> None:
    found = cookies("http://explorer.local")
    assert set(found) == {SESSION_COOKIE, CSRF_COOKIE}
    for header in found.values():
        assert "secure" not in header and "httponly" in header and "samesite=strict" in header


def test_a_session_ends_its_lifetime_after_sign_in_whatever_the_cookie_says() -> None:
    actor = session_actor(600)
    no_connection = cast(Any, None)  # the lookup reads only the session
    fresh = {"user": "00000000-0000-0000-0000-000000000001", "roles": ["auditor"], "since": int(time.time()) - 10}
    stale = {**fresh, "since": int(time.time()) - 601}
    assert asyncio.run(actor(fresh, no_connection)) is not None
    assert asyncio.run(actor(stale, no_connection)) is None
    assert asyncio.run(actor({"user": "not-a-uuid", "roles": [], "since": 0}, no_connection)) is None

"""The explorer's cookies are Secure as CHRONICLE_EXPLORER_SECURE_COOKIES says (by default exactly
when the request came over TLS), and always HttpOnly, SameSite=Strict and limited to /explorer
(api.explorer.session: one middleware stack per scheme)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import pytest
from litestar import Litestar, Request, Router, get
from litestar.middleware import DefineMiddleware
from litestar.testing import TestClient

from api.explorer.session import CSRF_COOKIE, PUBLIC, SESSION_COOKIE, ByScheme, session_actor
from infra.settings import Settings, SettingsError

SECRET = "unit-test-secret-" + "x" * 32


@get("/explorer/login", opt={PUBLIC: True})
async def sign_in(request: Request[Any, Any, Any]) -> str:
    request.set_session({"user": "00000000-0000-0000-0000-000000000001", "sid": "0" * 32, "since": 0})
    return "ok"


def app(secure: str) -> Litestar:
    protection = DefineMiddleware(ByScheme, secret=SECRET, ttl_s=600, secure=secure)
    return Litestar([Router("/", route_handlers=[sign_in], middleware=[protection])])


def cookies(base_url: str, secure: str = "auto") -> dict[str, str]:
    with TestClient(app(secure), base_url=base_url) as client:
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


def test_behind_a_proxy_that_ends_tls_the_cookies_can_be_made_secure() -> None:
    found = cookies("http://behind.proxy", secure="always")
    assert set(found) == {SESSION_COOKIE, CSRF_COOKIE}
    assert all("; secure" in header for header in found.values())


def test_secure_cookies_can_be_turned_off_even_over_tls() -> None:
    found = cookies("https://explorer.example", secure="never")
    assert found and all("secure" not in header for header in found.values())


def test_the_secure_cookies_setting_takes_three_values() -> None:
    assert Settings.from_env({}).explorer_secure_cookies == "auto"
    assert Settings.from_env({"CHRONICLE_EXPLORER_SECURE_COOKIES": "Always"}).explorer_secure_cookies == "always"
    with pytest.raises(SettingsError, match="CHRONICLE_EXPLORER_SECURE_COOKIES"):
        Settings.from_env({"CHRONICLE_EXPLORER_SECURE_COOKIES": "yes"})


def test_a_session_ends_its_lifetime_after_sign_in_whatever_the_cookie_says() -> None:
    """Neither a stale nor a malformed session gets as far as the access check (which the integration
    tests drive: a fresh session is as alive as its account session)."""
    actor = session_actor(600)
    no_connection = cast(Any, None)  # never reached: these sessions are refused from their contents alone
    stale = {
        "user": "00000000-0000-0000-0000-000000000001",
        "sid": "00000000000000000000000000000002",
        "since": int(time.time()) - 601,
    }
    assert asyncio.run(actor(stale, no_connection)) is None
    assert asyncio.run(actor({**stale, "since": int(time.time()), "user": "not-a-uuid"}, no_connection)) is None
    assert asyncio.run(actor({"user": stale["user"], "since": int(time.time())}, no_connection)) is None

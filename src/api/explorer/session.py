"""The explorer's sign-in and its protections, all from Litestar's own middleware.

- The session is a cookie of its own, separate from the API's bearer tokens: Litestar's client-side
  session backend encrypts it (AES-GCM), so nothing is stored on a server and a cookie planted before
  sign-in is replaced at sign-in. It lives `EXPLORER_SESSION_TTL_S` from sign-in (absolute).
- Every state-changing request carries Litestar's double-submit CSRF token (a form field checked
  against a signed cookie); a request without it is refused (403) before any handler runs.
- Both cookies are HttpOnly, SameSite=Strict, limited to /explorer, and Secure when the request came
  over TLS: one middleware stack is built per scheme, and each request takes its scheme's.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from litestar.config.csrf import CSRFConfig
from litestar.connection import ASGIConnection
from litestar.middleware.csrf import CSRFMiddleware
from litestar.middleware.session.base import SessionMiddleware
from litestar.middleware.session.client_side import ClientSideSessionBackend, CookieBackendConfig
from litestar.security.session_auth.middleware import SessionAuthMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from commands.base import Actor
from commands.identity import LoginResult
from domain.identity import Role

PATH = "/explorer"
SESSION_COOKIE = "chronicle_explorer"
CSRF_COOKIE = "chronicle_explorer_csrf"
PUBLIC = "explorer_public"  # route opt: the sign-in page needs no session (it still needs the CSRF token)
READERS = (Role.AUDITOR, Role.ADMIN)


def derived_key(secret: str, purpose: str) -> bytes:
    """A 32-byte key for one purpose, derived from the API's secret (HKDF): one secret to configure,
    and no key serves two purposes."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(secret.encode())


def session_data(login: LoginResult, now: float | None = None) -> dict[str, Any]:
    return {
        "user": str(login.user_id),
        "roles": sorted(r.value for r in login.roles),
        "sid": login.session_id.hex,
        "since": int(now if now is not None else time.time()),
    }


def session_actor(ttl_s: int) -> Callable[[dict[str, Any], ASGIConnection[Any, Any, Any, Any]], Awaitable[Any]]:
    """Who a session cookie says is signed in, or None (sign in again) once `ttl_s` has passed since
    sign-in, whatever the cookie's own expiry says."""

    async def actor(session: dict[str, Any], _: ASGIConnection[Any, Any, Any, Any]) -> Actor | None:
        try:
            if time.time() - int(session["since"]) > ttl_s:
                return None
            return Actor(uuid.UUID(session["user"]), frozenset(Role(r) for r in session["roles"]))
        except (KeyError, TypeError, ValueError):
            return None

    return actor


def session_id(connection: ASGIConnection[Any, Any, Any, Any]) -> uuid.UUID | None:
    """The identity session the explorer session was opened with (ended at sign-out)."""
    try:
        return uuid.UUID(hex=str(connection.session["sid"]))
    except (KeyError, ValueError):
        return None


def protected(app: ASGIApp, *, secret: str, ttl_s: int, tls: bool) -> ASGIApp:
    """`app` behind the explorer's session, CSRF check and sign-in, with cookies for one scheme."""
    cookies: dict[str, Any] = {"path": PATH, "secure": tls, "httponly": True, "samesite": "strict"}
    session = CookieBackendConfig(
        secret=derived_key(secret, "chronicle explorer session"), key=SESSION_COOKIE, max_age=ttl_s, **cookies
    )
    csrf = CSRFConfig(
        secret=derived_key(secret, "chronicle explorer csrf").hex(),
        cookie_name=CSRF_COOKIE,
        cookie_path=PATH,
        cookie_secure=tls,
        cookie_httponly=True,
        cookie_samesite="strict",
    )
    signed_in = SessionAuthMiddleware(
        app,
        exclude=None,
        exclude_http_methods=None,
        exclude_opt_key=PUBLIC,
        retrieve_user_handler=session_actor(ttl_s),
        scopes=None,
    )
    return SessionMiddleware(CSRFMiddleware(signed_in, csrf), backend=ClientSideSessionBackend(session))


class ByScheme:
    """Router middleware: each request goes through the protection stack built for its scheme, so
    the cookies of a request that came over TLS are Secure and those of plain HTTP (local use) work."""

    def __init__(self, app: ASGIApp, secret: str, ttl_s: int) -> None:
        self.plain = protected(app, secret=secret, ttl_s=ttl_s, tls=False)
        self.tls = protected(app, secret=secret, ttl_s=ttl_s, tls=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stack = self.tls if scope.get("scheme") in ("https", "wss") else self.plain
        await stack(scope, receive, send)

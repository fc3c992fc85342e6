"""The explorer's sign-in and its protections, all from Litestar's own middleware.

- The session is a cookie of its own, separate from the API's bearer tokens: Litestar's client-side
  session backend encrypts it (AES-GCM), and a cookie planted before sign-in is replaced at sign-in.
  It names the user and the identity session its sign-in opened; every request checks that session
  and reads the user's current roles the way the API does for a token (api.access), so a logout, a
  password change, an ended session or a revoked role applies on the next request. It lives
  `EXPLORER_SESSION_TTL_S` from sign-in (absolute) at most.
- Every state-changing request carries Litestar's double-submit CSRF token (a form field checked
  against a signed cookie); a request without it is refused (403) before any handler runs.
- The CSRF token is replaced at sign-in (its cookie is dropped; the next page sets a new one).
- Both cookies are HttpOnly, SameSite=Strict, limited to /explorer, and Secure as
  `CHRONICLE_EXPLORER_SECURE_COOKIES` says: `auto` when the request came over TLS (one middleware
  stack is built per scheme, and each request takes its scheme's), `always` (behind a proxy that
  ends TLS), or `never`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from litestar.config.csrf import CSRFConfig
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.middleware.csrf import CSRFMiddleware
from litestar.middleware.session.base import SessionMiddleware
from litestar.middleware.session.client_side import ClientSideSessionBackend, CookieBackendConfig
from litestar.security.session_auth.middleware import SessionAuthMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from commands.base import Actor
from commands.identity import LoginResult
from domain.identity import Role
from infra.keys import derived_key

PATH = "/explorer"
SESSION_COOKIE = "chronicle_explorer"
CSRF_COOKIE = "chronicle_explorer_csrf"
PUBLIC = "explorer_public"  # route opt: the sign-in page needs no session (it still needs the CSRF token)
READERS = (Role.AUDITOR, Role.ADMIN)


def session_data(login: LoginResult, now: float | None = None) -> dict[str, Any]:
    return {
        "user": str(login.user_id),
        "sid": login.session_id.hex,
        "since": int(now if now is not None else time.time()),
    }


def session_actor(ttl_s: int) -> Callable[[dict[str, Any], ASGIConnection[Any, Any, Any, Any]], Awaitable[Any]]:
    """Who a session cookie says is signed in, with the roles the user has now; or None (sign in
    again; Litestar then drops the cookie) once `ttl_s` has passed since sign-in, whatever the cookie's own
    expiry says, or once its identity session has ended."""

    async def actor(session: dict[str, Any], connection: ASGIConnection[Any, Any, Any, Any]) -> Actor | None:
        try:
            if time.time() - int(session["since"]) > ttl_s:
                return None
            user_id, sid = uuid.UUID(session["user"]), uuid.UUID(hex=str(session["sid"]))
        except (KeyError, TypeError, ValueError):
            return None
        try:
            found: Actor = await connection.app.state.runtime.access.actor(user_id, sid)
        except NotAuthorizedException:
            return None
        return found

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


SECURE_COOKIES = ("auto", "always", "never")


class ByScheme:
    """Router middleware: each request goes through the protection stack its cookies need. With
    `secure="auto"` the cookies of a request that came over TLS are Secure and those of plain HTTP
    (local use) work; `always` and `never` ignore the scheme (`always` behind a proxy that ends TLS,
    where every request reaches us as plain HTTP)."""

    def __init__(self, app: ASGIApp, secret: str, ttl_s: int, secure: str = "auto") -> None:
        if secure not in SECURE_COOKIES:
            raise ValueError(f"secure must be one of {SECURE_COOKIES}: {secure!r}")
        self.secure = secure
        self.plain = protected(app, secret=secret, ttl_s=ttl_s, tls=False)
        self.tls = protected(app, secret=secret, ttl_s=ttl_s, tls=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tls = self.secure == "always" or (self.secure == "auto" and scope.get("scheme") in ("https", "wss"))
        await (self.tls if tls else self.plain)(scope, receive, send)

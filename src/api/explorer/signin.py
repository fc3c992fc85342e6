"""Signing in to the explorer with a Chronicle account, and out again. Only auditors and admins get
a session; anyone else is refused (403) and gets none."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect, Template

from api.auth_guard import AccountLocked
from api.commands.common import context
from api.explorer.common import HEADERS, page, safe_next
from api.explorer.session import PUBLIC, READERS, session_data, session_id
from api.runtime import RUNTIME, Runtime
from commands.base import Actor, Context
from commands.identity import LoginResult, Unauthorized


class SignInForm(msgspec.Struct):
    email: str = ""
    password: str = ""
    next: str = ""


class ExplorerSignIn(Controller):
    path = "/explorer"
    dependencies = RUNTIME

    @get("/login", opt={PUBLIC: True}, name="explorer:login")
    async def form(self, next: str | None = None) -> Template:
        return page("login.html", next=safe_next(next), error=None)

    @post("/login", opt={PUBLIC: True}, status_code=303)
    async def sign_in(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        data: Annotated[SignInForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> Redirect | Template:
        target = safe_next(data.next)
        if not data.email or not data.password:
            return page("login.html", 401, next=target, error="Give your email and password.")
        try:
            async with runtime.guard.login(request, "explorer login", data.email):  # the API's lockout
                login = await runtime.run_hashing(
                    runtime.chronicle.identity.login, context(request, "explorer.login"), data.email, data.password
                )
        except Unauthorized:
            return page("login.html", 401, next=target, error="That email and password do not match an account.")
        except AccountLocked:
            return page("login.html", 429, next=target, error="Too many failed sign-ins for this account; try later.")
        if not login.roles & set(READERS):
            await runtime.run(runtime.chronicle.identity.logout, _as(request, login), login.session_id)
            return page("login.html", 403, next=target, error="The explorer is for auditors and admins only.")
        request.set_session(session_data(login))
        return Redirect(target, status_code=303, headers=HEADERS)

    @post("/logout", status_code=303)
    async def sign_out(self, request: Request[Any, Any, Any], runtime: Runtime) -> Redirect:
        """Ends the explorer session and the account session it was opened with."""
        sid = session_id(request)
        if sid is not None:
            await runtime.run(runtime.chronicle.identity.logout, context(request, "explorer.logout"), sid)
        request.clear_session()
        return Redirect("/explorer/login", status_code=303, headers=HEADERS)


def _as(request: Request[Any, Any, Any], login: LoginResult) -> Context:
    """The context of a refused user ending the account session their sign-in opened."""
    ctx = context(request, "explorer.login_refused")
    return Context(ctx.command, Actor(login.user_id, login.roles), ctx.correlation_id, ctx.causation_id)

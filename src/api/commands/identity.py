"""Command routes of the identity context: register, log in, refresh, log out, change the password,
grant, revoke."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, delete, post
from litestar.security.jwt import JWTAuth, Token

from api.auth import PUBLIC, access_token, requires_role, session_of
from api.commands.common import (
    IDEMPOTENCY_KEY,
    IF_MATCH,
    CommandAccepted,
    context,
    expected_version,
    run_command,
)
from api.contract import COMMAND_HEADERS, command, example, links, public
from api.runtime import RUNTIME, Runtime
from commands.base import Actor
from commands.identity import MAX_PASSWORD, MIN_PASSWORD, LoginResult
from domain.errors import Invalid
from domain.identity import MAX_EMAIL, MAX_NAME, Role

Email = Annotated[str, msgspec.Meta(min_length=3, max_length=MAX_EMAIL, examples=["ada@example.com"])]
Password = Annotated[str, msgspec.Meta(min_length=MIN_PASSWORD, max_length=MAX_PASSWORD)]


class RegisterBody(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: Password
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME)]


class LoginBody(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_PASSWORD)]


class RefreshBody(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]


class PasswordChangeBody(msgspec.Struct, forbid_unknown_fields=True):
    current_password: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_PASSWORD)]
    new_password: Password


class TokenPair(msgspec.Struct):
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: Literal["bearer"] = "bearer"


class GrantBody(msgspec.Struct, forbid_unknown_fields=True):
    role: Role


def get_auth(request: Request[Any, Any, Any]) -> JWTAuth[Actor, Token]:
    auth: JWTAuth[Actor, Token] = request.app.state.jwt_auth
    return auth


class AuthCommands(Controller):
    path = "/v1/auth"
    tags = ["commands"]
    dependencies = RUNTIME

    @post(
        "/register",
        opt={**PUBLIC, **links(GetUser={"user_id": "$response.body#/id"})},
        operation_id="Register",
        summary="Register a user (as a member)",
        status_code=201,
        responses=public(409, 413),
    )
    async def register(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        data: Annotated[
            RegisterBody, example({"email": "ada@example.com", "password": "correct horse", "name": "Ada"})
        ],
        idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY] = None,
    ) -> Response[CommandAccepted]:
        async with runtime.guard.recording(request, "register", data.email):
            return await run_command(
                request,
                runtime,
                "auth.register",
                runtime.chronicle.identity.register,
                data.email,
                data.name,
                data.password,
                status=201,
                idempotency_key=idempotency_key,
                hashing=True,
            )

    @post(
        "/login",
        opt=PUBLIC,
        operation_id="Login",
        summary="Exchange email and password for tokens",
        status_code=200,
        responses=public(401, 413),
    )
    async def login(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        data: Annotated[LoginBody, example({"email": "ada@example.com", "password": "correct horse"})],
    ) -> TokenPair:
        async with runtime.guard.login(request, "login", data.email):  # 429 while the account is locked
            result = await runtime.run_hashing(
                runtime.chronicle.identity.login, context(request, "auth.login"), data.email, data.password
            )
        return token_pair(get_auth(request), runtime, result)

    @post(
        "/refresh",
        opt=PUBLIC,
        operation_id="Refresh",
        summary="Exchange a refresh token for a new pair; the one sent is revoked",
        status_code=200,
        responses=public(401, 403, 413),
    )
    async def refresh(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        data: Annotated[RefreshBody, example({"refresh_token": "<refresh_token from login>"})],
    ) -> TokenPair:
        async with runtime.guard.recording(request, "refresh", session_named_by(data.refresh_token)):
            result = await runtime.run(
                runtime.chronicle.identity.refresh, context(request, "auth.refresh"), data.refresh_token
            )
        return token_pair(get_auth(request), runtime, result)

    @post(
        "/logout",
        operation_id="Logout",
        summary="End the session of the access token (its refresh token dies)",
        status_code=200,
        responses=command(403),
        response_headers=COMMAND_HEADERS,
    )
    async def logout(
        self,
        request: Request[Actor, Token, Any],
        runtime: Runtime,
        idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY] = None,
    ) -> Response[CommandAccepted]:
        return await run_command(
            request,
            runtime,
            "auth.logout",
            runtime.chronicle.identity.logout,
            session_of(request.auth),
            idempotency_key=idempotency_key,
        )

    @post(
        "/password",
        operation_id="ChangePassword",
        summary="Change the caller's password; every other session of the user ends",
        status_code=200,
        responses=command(403, 409),
        response_headers=COMMAND_HEADERS,
    )
    async def change_password(
        self,
        request: Request[Actor, Token, Any],
        runtime: Runtime,
        data: Annotated[
            PasswordChangeBody, example({"current_password": "correct horse", "new_password": "correct horse battery"})
        ],
        idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY] = None,
    ) -> Response[CommandAccepted]:
        return await run_command(
            request,
            runtime,
            "auth.change_password",
            runtime.chronicle.identity.change_password,
            session_of(request.auth),
            data.current_password,
            data.new_password,
            idempotency_key=idempotency_key,
            hashing=True,
        )


class UserRoleCommands(Controller):
    path = "/v1/users/{user_id:uuid}/roles"
    tags = ["commands"]
    dependencies = RUNTIME
    guards = [requires_role(Role.ADMIN)]

    @post(
        operation_id="GrantRole",
        summary="Grant a role (admins only)",
        status_code=200,
        responses=command(403, 404, 409, 412),
        response_headers=COMMAND_HEADERS,
    )
    async def grant(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        user_id: uuid.UUID,
        data: Annotated[GrantBody, example({"role": "manager"})],
        if_match: Annotated[str | None, IF_MATCH] = None,
        idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY] = None,
    ) -> Response[CommandAccepted]:
        return await run_command(
            request,
            runtime,
            "users.grant_role",
            runtime.chronicle.identity.grant,
            user_id,
            data.role,
            expected_version(if_match),
            idempotency_key=idempotency_key,
        )

    @delete(
        "/{role:str}",
        operation_id="RevokeRole",
        summary="Revoke a role (admins only)",
        status_code=200,
        responses=command(403, 404, 409, 412),
        response_headers=COMMAND_HEADERS,
    )
    async def revoke(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        user_id: uuid.UUID,
        role: str,
        if_match: Annotated[str | None, IF_MATCH] = None,
        idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY] = None,
    ) -> Response[CommandAccepted]:
        try:
            known = Role(role)
        except ValueError:
            raise Invalid(f"unknown role {role!r}; roles are {', '.join(Role)}", field="role") from None
        return await run_command(
            request,
            runtime,
            "users.revoke_role",
            runtime.chronicle.identity.revoke,
            user_id,
            known,
            expected_version(if_match),
            idempotency_key=idempotency_key,
        )


class UserErasure(Controller):
    path = "/v1/users/{user_id:uuid}/erase"
    tags = ["commands"]
    dependencies = RUNTIME

    @post(
        operation_id="EraseUser",
        summary="Erase a user's personal data (the user themselves, or an admin)",
        status_code=200,
        responses=command(403, 404, 409),
        response_headers=COMMAND_HEADERS,
    )
    async def erase(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        user_id: uuid.UUID,
        idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY] = None,
    ) -> Response[CommandAccepted]:
        return await run_command(
            request, runtime, "users.erase", runtime.chronicle.identity.erase, user_id, idempotency_key=idempotency_key
        )


def session_named_by(refresh_token: str) -> str:
    """Who a refresh attempt claims to be, fit for a log: the session id its token names (the part
    before the dot), never the secret part."""
    head = refresh_token.partition(".")[0]
    try:
        return f"session {uuid.UUID(hex=head)}"
    except ValueError:
        return "a malformed refresh token"


def token_pair(auth: JWTAuth[Actor, Token], runtime: Runtime, result: LoginResult) -> TokenPair:
    return TokenPair(
        access_token=access_token(auth, result),
        refresh_token=result.refresh_token,
        expires_in=runtime.settings.access_token_ttl_s,
    )

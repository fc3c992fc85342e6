"""The OAuth2 token endpoint (RFC 6749 §4.3 and §6), next to the JSON login and refresh routes:
the same sessions and tokens, in the form and with the errors standard OAuth2 clients expect."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, post
from litestar.datastructures import ResponseHeader
from litestar.enums import RequestEncodingType
from litestar.exceptions import ValidationException
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import Body

from api.auth import PUBLIC
from api.commands.common import context
from api.commands.identity import TokenPair, get_auth, session_named_by, token_pair
from api.contract import public
from api.runtime import RUNTIME, Runtime
from commands.identity import Unauthorized
from domain.errors import DomainError


class TokenForm(msgspec.Struct):
    """An RFC 6749 token request (form-encoded). `password` grant: `username` (the email) and
    `password`; `refresh_token` grant: `refresh_token`. Unknown parameters are ignored, as the RFC
    asks; `scope` is accepted and has no effect (a token carries the user's roles)."""

    grant_type: Literal["password", "refresh_token"]
    username: str | None = None
    password: str | None = None
    refresh_token: str | None = None
    scope: str | None = None


OAuth2ErrorCode = Literal["invalid_request", "invalid_grant", "unsupported_grant_type"]


class OAuth2Error(msgspec.Struct, omit_defaults=True):
    """An RFC 6749 §5.2 error."""

    error: OAuth2ErrorCode
    error_description: str | None = None


_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class OAuth2Failure(Exception):
    def __init__(self, error: OAuth2ErrorCode, description: str) -> None:
        super().__init__(description)
        self.error, self.description = error, description


def on_oauth2_failure(request: Request[Any, Any, Any], exc: OAuth2Failure) -> Response[OAuth2Error]:
    return Response(OAuth2Error(exc.error, exc.description), status_code=400, headers=_NO_STORE)


def on_token_form_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[OAuth2Error]:
    """A token request Litestar cannot read into a `TokenForm`: an OAuth2 error, not a problem."""
    keys = {str(e.get("key", "")) for e in exc.extra} if isinstance(exc.extra, list) else set()
    if "grant_type" in keys:
        failure = OAuth2Failure("unsupported_grant_type", "grant_type must be password or refresh_token")
    else:
        failure = OAuth2Failure("invalid_request", "malformed: " + (", ".join(sorted(k for k in keys if k)) or "body"))
    return on_oauth2_failure(request, failure)


class OAuth2Token(Controller):
    path = "/v1/auth"
    tags = ["commands"]
    dependencies = RUNTIME

    @post(
        "/token",
        opt=PUBLIC,
        operation_id="IssueToken",
        summary="OAuth2 token endpoint (RFC 6749): password or refresh_token grant, form-encoded",
        status_code=200,
        responses={
            **public(413),
            400: ResponseSpec(
                data_container=OAuth2Error,
                description="An OAuth2 error: invalid_request, invalid_grant or unsupported_grant_type",
                generate_examples=False,
            ),
        },
        response_headers=[
            ResponseHeader(name="Cache-Control", value="no-store", documentation_only=True),
            ResponseHeader(name="Pragma", value="no-cache", documentation_only=True),
        ],
        exception_handlers={ValidationException: on_token_form_error, OAuth2Failure: on_oauth2_failure},
    )
    async def token(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        data: Annotated[
            TokenForm,
            Body(
                media_type=RequestEncodingType.URL_ENCODED,
                examples=[
                    Example(
                        summary="password grant",
                        value={"grant_type": "password", "username": "ada@example.com", "password": "correct horse"},
                    ),
                    Example(
                        summary="refresh_token grant",
                        value={"grant_type": "refresh_token", "refresh_token": "<refresh_token from a token response>"},
                    ),
                ],
            ),
        ],
    ) -> Response[TokenPair]:
        ctx = context(request, "auth.token")
        identity = runtime.chronicle.identity
        if data.grant_type == "password" and not (data.username and data.password):
            raise OAuth2Failure("invalid_request", "the password grant needs username and password")
        if data.grant_type == "refresh_token" and not data.refresh_token:
            raise OAuth2Failure("invalid_request", "the refresh_token grant needs refresh_token")
        try:
            if data.grant_type == "password":
                async with runtime.guard.login(request, "login", data.username or ""):  # 429 while locked
                    result = await runtime.run_hashing(identity.login, ctx, data.username, data.password)
            else:
                async with runtime.guard.recording(request, "refresh", session_named_by(data.refresh_token or "")):
                    result = await runtime.run(identity.refresh, ctx, data.refresh_token)
        except (Unauthorized, DomainError):
            raise OAuth2Failure("invalid_grant", "invalid credentials or refresh token") from None
        return Response(token_pair(get_auth(request), runtime, result), headers=_NO_STORE)

"""Authentication: short-lived JWT access tokens (roles and session id in their extras) and
rotating refresh tokens (see commands.identity). Authorization by role is a route guard; by
project membership it is the commands' business."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.security.jwt import JWTAuth, Token

from commands.base import Actor
from commands.identity import LoginResult
from domain.identity import Role
from infra.settings import Settings

PUBLIC = {"exclude_from_auth": True}


async def _actor_of(token: Token, connection: ASGIConnection[Any, Any, Any, Any]) -> Actor:
    try:
        user_id = uuid.UUID(token.sub)
        roles = frozenset(Role(r) for r in token.extras.get("roles", ()))
    except ValueError:
        raise NotAuthorizedException("the access token is malformed") from None
    return Actor(user_id, roles)


def jwt_auth(settings: Settings) -> JWTAuth[Actor, Token]:
    return JWTAuth[Actor, Token](
        retrieve_user_handler=_actor_of,
        token_secret=settings.require_jwt_secret(),
        default_token_expiration=timedelta(seconds=settings.access_token_ttl_s),
        exclude=["^/schema"],
        exclude_opt_key="exclude_from_auth",
        description="Access token from POST /v1/auth/login (or /refresh), sent as `Authorization: Bearer …`.",
    )


def access_token(auth: JWTAuth[Actor, Token], login: LoginResult) -> str:
    return auth.create_token(identifier=str(login.user_id),
                             token_extras={"roles": sorted(r.value for r in login.roles),
                                           "sid": login.session_id.hex},
                             token_unique_jwt_id=uuid.uuid4().hex)


def session_of(token: Token) -> uuid.UUID:
    try:
        return uuid.UUID(hex=str(token.extras["sid"]))
    except (KeyError, ValueError):
        raise NotAuthorizedException("the access token names no session") from None


def requires_role(*roles: Role) -> Any:
    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        actor = connection.user
        if not isinstance(actor, Actor) or not actor.roles & set(roles):
            raise PermissionDeniedException(f"this needs the role {' or '.join(r.value for r in roles)}")
    return guard

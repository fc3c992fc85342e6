"""Query routes of the identity context: read models only, never the event store."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get

from api.contract import ETAG, query
from api.queries import cached
from api.queries.common import MinPosition, etag, position_of, wait_for_position
from api.runtime import RUNTIME, Runtime
from commands.base import Actor
from domain import access
from domain.errors import NotFound
from projections.users import UserDirectory

READS = [UserDirectory.name]


class UserView(msgspec.Struct, omit_defaults=True):
    """An erased user has no name (null), no email, and `erased: true`."""

    id: uuid.UUID
    name: str | None
    roles: list[str]
    registered_at: datetime
    version: int
    email: str | None = None
    erased: bool = False


class UserQueries(Controller):
    tags = ["queries"]
    dependencies = RUNTIME

    @get("/v1/me", operation_id="GetMe", summary="The caller's own user", responses=query(404), response_headers=[ETAG])
    async def me(
        self, request: Request[Actor, Any, Any], runtime: Runtime, min_position: MinPosition = None
    ) -> Response[UserView]:
        return await self._user(request, runtime, request.user.user_id, min_position)

    @get(
        "/v1/users/{user_id:uuid}",
        operation_id="GetUser",
        summary="A user of the directory",
        responses=query(404),
        response_headers=[ETAG],
    )
    async def user(
        self, request: Request[Actor, Any, Any], runtime: Runtime, user_id: uuid.UUID, min_position: MinPosition = None
    ) -> Response[UserView]:
        return await self._user(request, runtime, user_id, min_position)

    @staticmethod
    async def _user(
        request: Request[Actor, Any, Any], runtime: Runtime, user_id: uuid.UUID, min_position: str | None
    ) -> Response[UserView]:
        user = await cached.cached_user(runtime, user_id, position_of(min_position))
        if user is None:
            await wait_for_position(runtime, request, min_position, READS)
            user = await cached.read_user(runtime, user_id, UserView)
        if user is None:
            raise NotFound(f"user {user_id} not found")
        if not access.sees_email_of(request.user, user_id):
            user = msgspec.structs.replace(user, email=None)
        return Response(user, headers=etag(user.version))

"""Admins' routes: the record of refused authentications (see api.auth_guard)."""

from __future__ import annotations

import re
from typing import Annotated

import msgspec
from litestar import Controller, get
from litestar.exceptions import HTTPException
from litestar.params import Parameter

from api.auth import requires_role
from api.auth_guard import AuthFailure
from api.contract import query
from api.runtime import RUNTIME, Runtime
from domain.identity import Role

_STREAM_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")


class AuthFailurePage(msgspec.Struct):
    items: list[AuthFailure]
    next_cursor: str | None = None


class AdminQueries(Controller):
    path = "/v1/admin"
    tags = ["admin"]
    dependencies = RUNTIME
    guards = [requires_role(Role.ADMIN)]

    @get(
        "/auth-failures",
        operation_id="ListAuthFailures",
        summary="Refused logins, registrations and refreshes, newest first (admins only)",
        responses=query(403),
    )
    async def auth_failures(
        self,
        runtime: Runtime,
        limit: Annotated[int, Parameter(ge=1, le=1000, description="Page size, at most 1000")] = 100,
        cursor: Annotated[str | None, Parameter(description="`next_cursor` of the previous page")] = None,
    ) -> AuthFailurePage:
        if cursor is not None and not _STREAM_ID.match(cursor):
            raise HTTPException(
                status_code=422,
                detail="cursor: not a cursor this list gave out",
                extra=[{"key": "cursor", "message": "unknown cursor"}],
            )
        items, next_cursor = await runtime.guard.failures(limit, cursor)
        return AuthFailurePage(items, next_cursor)

"""The Litestar application. Command routes and query routes live in their own modules; this
module only assembles them."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Router
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin

from api.admin import AdminQueries
from api.audit import AuditQueries
from api.auth import jwt_auth
from api.commands.commerce import InventoryCommands, OrderCommands, ProductCommands
from api.commands.identity import AuthCommands, UserErasure, UserRoleCommands
from api.commands.oauth2 import OAuth2Token
from api.commands.work import ProjectCommands, TaskCommands
from api.contract import finish_document
from api.explorer import TEMPLATES, explorer_routers
from api.explorer.common import explorer_aware
from api.headers import cors, security_headers
from api.health import HealthController
from api.limits import STORE, auth_limit, command_limit, count_ahead, is_command, rate_limit_store
from api.observe import MetricsController, middleware
from api.problems import EXCEPTION_HANDLERS
from api.queries import warm
from api.queries.catalog import CatalogQueries
from api.queries.identity import UserQueries
from api.queries.orders import OrderQueries
from api.queries.work import ProjectQueries, TaskQueries
from api.runtime import runtime_lifespan
from infra.observe import logs
from infra.settings import Settings

MAX_BODY = 1024 * 1024


async def refuse_nul_in_query(request: Request[Any, Any, Any]) -> None:
    """No read model can hold or match a NUL character (PostgreSQL text cannot): a query string
    that carries one is refused before it reaches a route. (Async: Litestar runs a synchronous
    hook in a worker thread, a thread hop on every request.)"""
    if b"%00" in request.scope.get("query_string", b""):
        raise HTTPException(status_code=422, detail="query parameters must not contain NUL characters")


async def is_auth_route(request: Request[Any, Any, Any]) -> bool:
    """The API's auth routes, and the explorer's sign-in (the same passwords)."""
    path = request.url.path
    return path.startswith("/v1/auth/") or (path == "/explorer/login" and request.method == "POST")


async def is_command_route(request: Request[Any, Any, Any]) -> bool:
    """Every route that changes something, apart from /v1/auth (limited per address instead)."""
    return is_command(request.method, request.url.path)


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or Settings.from_env()
    logs.configure(settings.log_level, settings.log_format)

    limits_store = rate_limit_store(settings)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with limits_store, runtime_lifespan(app, settings), warm.warming(app.state.runtime):
            # What start-up made lives as long as the process: out of the collector's sight, a full
            # collection no longer walks it (with it, one stalled every request in flight: the
            # Redis routes' p99 was about 110 ms; with it frozen, about 15 ms, `bench queries`).
            gc.freeze()
            yield

    auth = jwt_auth(settings)
    by_address, by_user = auth_limit(settings), command_limit(settings)
    by_address.check_throttle_handler = is_auth_route
    by_user.check_throttle_handler = is_command_route
    app = Litestar(
        # One router for all controllers: registering two controllers with a common path (commands and
        # queries of /v1/projects) directly on the app trips Litestar 2.25 over duplicate OPTIONS routes.
        route_handlers=[
            Router(
                "/",
                route_handlers=[
                    HealthController,
                    AuthCommands,
                    OAuth2Token,
                    UserRoleCommands,
                    UserErasure,
                    ProjectCommands,
                    TaskCommands,
                    ProductCommands,
                    InventoryCommands,
                    OrderCommands,
                    UserQueries,
                    ProjectQueries,
                    TaskQueries,
                    AuditQueries,
                    CatalogQueries,
                    OrderQueries,
                    AdminQueries,
                    MetricsController,
                ],
            ),
            *explorer_routers(settings),
        ],
        template_config=TEMPLATES,
        on_app_init=[auth.on_app_init],
        # After the authentication middleware (which on_app_init puts first), so a limit per user
        # knows the user.
        middleware=[*middleware(settings), by_address.middleware, by_user.middleware],
        before_send=[security_headers],
        stores={STORE: limits_store},
        cors_config=cors(settings),
        logging_config=None,  # infra.observe.logs configured logging; Litestar's default would replace it
        # The per-user limit is counted in the access check's Redis round trip (api.limits.CountAhead).
        state=State({"jwt_auth": auth, "count_ahead": count_ahead(by_user, limits_store)}),
        lifespan=[lifespan],
        exception_handlers=explorer_aware(EXCEPTION_HANDLERS),
        request_max_body_size=MAX_BODY,
        before_request=refuse_nul_in_query,
        openapi_config=OpenAPIConfig(
            title="Chronicle",
            version="0.1.0",
            path="/schema",
            description="An event-sourced CQRS backend: commands append events, queries read views.",
            render_plugins=[ScalarRenderPlugin()],
        ),
        debug=False,
    )
    finish_document(app)
    return app

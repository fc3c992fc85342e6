"""The auditors' explorer at /explorer: server-rendered pages (Jinja through Litestar's templates,
autoescaped; one small script of our own, no build step) over the same reads as the auditors'
routes, for auditors and admins, with a session of its own (see api.explorer.session).

Wiring: `explorer_routers(settings)` among the app's route handlers and `TEMPLATES` as its
template config. Its routes are not part of the API and stay out of the OpenAPI document."""

from __future__ import annotations

from pathlib import Path

from litestar import Router
from litestar.middleware import DefineMiddleware
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from api.auth import PUBLIC
from api.explorer.common import EXCEPTION_HANDLERS, RESPONSE_HEADERS
from api.explorer.integrity import ExplorerIntegrity
from api.explorer.pages import ExplorerPages
from api.explorer.session import ByScheme
from api.explorer.signin import ExplorerSignIn
from infra.settings import Settings

HERE = Path(__file__).parent
TEMPLATES = TemplateConfig(directory=HERE / "templates", engine=JinjaTemplateEngine)


def explorer_routers(settings: Settings) -> list[Router]:
    """The pages, behind the explorer's session; and their stylesheet and script, public."""
    static = create_static_files_router(
        "/explorer/static", directories=[HERE / "static"], opt=PUBLIC, include_in_schema=False
    )
    return [_pages(settings), static]


def _pages(settings: Settings) -> Router:
    return Router(
        "/",
        route_handlers=[ExplorerSignIn, ExplorerPages, ExplorerIntegrity],
        middleware=[
            DefineMiddleware(ByScheme, secret=settings.require_jwt_secret(), ttl_s=settings.explorer_session_ttl_s)
        ],
        opt=PUBLIC,  # not the API's bearer tokens: the explorer's own session (see api.explorer.session)
        exception_handlers=EXCEPTION_HANDLERS,
        response_headers=RESPONSE_HEADERS,
        include_in_schema=False,
    )

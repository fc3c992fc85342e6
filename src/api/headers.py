"""Security headers on every response, errors included, and CORS only where configured.

Every response says `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer` and a
Content-Security-Policy (for JSON, nothing may load at all; the docs page under /schema may load
its renderer from the CDN Litestar's Scalar plugin uses); every /v1/auth response says
`Cache-Control: no-store`, so no cache keeps a token pair. A `before_send` hook, which sees every
message the app sends, so even a 404 from the router or a 401 or 429 from a middleware carries them.
"""

from __future__ import annotations

from litestar.config.cors import CORSConfig
from litestar.datastructures import MutableScopeHeaders
from litestar.types import Message, Scope

from infra.settings import Settings

API_CSP = "default-src 'none'; frame-ancestors 'none'"
DOCS_CSP = (
    "default-src 'none'; script-src 'self' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src 'self' data: https://fonts.gstatic.com https://cdn.jsdelivr.net; img-src 'self' data: https:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


async def security_headers(message: Message, scope: Scope) -> None:
    if message["type"] != "http.response.start":
        return
    path: str = scope.get("path", "")
    message.setdefault("headers", [])
    headers = MutableScopeHeaders(message)
    headers["X-Content-Type-Options"] = "nosniff"
    if "Referrer-Policy" not in headers:
        headers["Referrer-Policy"] = "no-referrer"
    if "Content-Security-Policy" not in headers:  # the explorer's pages send their own
        html = (headers.get("content-type") or "").startswith("text/html")
        docs = path == "/schema" or path.startswith("/schema/")
        headers["Content-Security-Policy"] = DOCS_CSP if docs and html else API_CSP
    if path.startswith("/v1/auth/"):
        headers["Cache-Control"] = "no-store"


def cors(settings: Settings) -> CORSConfig | None:
    """Off (no CORS headers at all: browsers keep other origins out) unless CHRONICLE_CORS_ORIGINS
    lists origins."""
    if not settings.cors_origins:
        return None
    return CORSConfig(
        allow_origins=list(settings.cors_origins),
        allow_methods=["GET", "POST", "DELETE"],
        allow_headers=["Authorization", "Content-Type", "If-Match", "Idempotency-Key", "X-Min-Position"],
        expose_headers=["ETag", "Retry-After", "X-Correlation-Id", "Idempotent-Replayed"],
    )

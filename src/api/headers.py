"""Security headers on every response, errors included, and CORS only where configured.

Every response says `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer` and a
Content-Security-Policy (for JSON, nothing may load at all; the docs page under /schema may load
its renderer from the CDN Litestar's Scalar plugin uses); every /v1/auth response says
`Cache-Control: no-store`, so no cache keeps a token pair. A `before_send` hook, which sees every
message the app sends, so even a 404 from the router or a 401 or 429 from a middleware carries them.
"""

from __future__ import annotations

from typing import Any

from litestar.config.cors import CORSConfig
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
    present = header_names(message)
    put = [(b"x-content-type-options", b"nosniff")]
    if b"referrer-policy" not in present:
        put.append((b"referrer-policy", b"no-referrer"))
    if b"content-security-policy" not in present:  # the explorer's pages send their own
        html = present.get(b"content-type", b"").startswith(b"text/html")
        docs = path == "/schema" or path.startswith("/schema/")
        put.append((b"content-security-policy", DOCS_CSP_BYTES if docs and html else API_CSP_BYTES))
    if path.startswith("/v1/auth/"):
        put.append((b"cache-control", b"no-store"))
    set_headers(message, put, present)


API_CSP_BYTES, DOCS_CSP_BYTES = API_CSP.encode(), DOCS_CSP.encode()


def header_names(message: Any) -> dict[bytes, bytes]:
    """The response's header names, lower-cased, with the first value of each."""
    present: dict[bytes, bytes] = {}
    for name, value in message.get("headers") or ():
        present.setdefault(bytes(name).lower(), bytes(value))
    return present


def set_headers(message: Any, headers: list[tuple[bytes, bytes]], present: dict[bytes, bytes] | None = None) -> None:
    """Sets each of `headers` (lower-case names) on a response start message, replacing any value
    it had: as `MutableScopeHeaders` does, in one pass over the headers instead of one per header
    (each of its look-ups decodes every header name)."""
    raw = list(message.get("headers") or ())
    present = header_names(message) if present is None else present
    names = {name for name, _ in headers}
    if names & present.keys():
        raw = [(name, value) for name, value in raw if bytes(name).lower() not in names]
    message["headers"] = [*raw, *headers]


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

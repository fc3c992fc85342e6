"""What every explorer page shares: the response headers (a strict Content-Security-Policy: no
inline script or style, nothing from elsewhere), rendering, parsing of the filters people type,
and HTML answers to errors (a page, never problem+json, never a 500 for bad input)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import psycopg
from eventsourcing.persistence import OperationalError
from litestar import Request, Response
from litestar.datastructures import ResponseHeader
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.response import Redirect, Template
from psycopg_pool import PoolTimeout
from redis.exceptions import RedisError

from api.problems import ServiceUnavailable
from domain.errors import DomainError, Forbidden, NotFound

log = logging.getLogger(__name__)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self';"
    " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
RESPONSE_HEADERS = [ResponseHeader(name=k, value=v) for k, v in HEADERS.items()]


class BadInput(ValueError):
    """A filter or parameter typed into a page that cannot be used; the page says which."""


def page(template: str, status: int = 200, **context: Any) -> Template:
    return Template(template_name=template, context=context, status_code=status, headers=HEADERS)


def as_json(value: Any) -> str:
    """A value as the JSON the API would give (for display; the template escapes it)."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def as_pretty_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, indent=2, default=str)


def parse_time(value: str | None, field: str) -> datetime | None:
    """ISO 8601, or what a datetime-local input sends (no zone: read as UTC)."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise BadInput(f"{field}: not a date and time (e.g. 2026-11-27T10:30)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def local_input(value: datetime | None) -> str:
    """A time as a datetime-local input shows it (UTC)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S") if value else ""


def safe_next(target: str | None) -> str:
    """Where to go after sign-in: an explorer page, never another site."""
    if target and target.startswith("/explorer/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/explorer/log"


def _error_page(request: Request[Any, Any, Any], status: int, detail: str, **headers: str) -> Response[Any]:
    actor = request.scope.get("user")
    return Template(
        template_name="error.html",
        context={"status": status, "title": HTTPStatus(status).phrase, "detail": detail, "signed_in": actor},
        status_code=status,
        headers={**HEADERS, **headers},
    )


def on_not_signed_in(request: Request[Any, Any, Any], exc: NotAuthorizedException) -> Response[Any]:
    if request.method in ("GET", "HEAD"):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return Redirect(f"/explorer/login?next={quote(target, safe='')}", status_code=303, headers=HEADERS)
    return _error_page(request, 401, "Sign in first.")


def on_http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if exc.status_code >= 500:
        log.error("explorer %s %s: %s", request.method, request.url.path, exc.detail)
    return _error_page(request, exc.status_code, exc.detail or HTTPStatus(exc.status_code).phrase)


def on_validation(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    fields = [str(e.get("key") or e.get("message")) for e in exc.extra if isinstance(e, dict)] if exc.extra else []
    return _error_page(request, 400, "These values cannot be used: " + (", ".join(fields) or str(exc.detail)))


def on_bad_input(request: Request[Any, Any, Any], exc: BadInput) -> Response[Any]:
    return _error_page(request, 422, str(exc))


def on_domain_error(request: Request[Any, Any, Any], exc: DomainError) -> Response[Any]:
    status = 404 if isinstance(exc, NotFound) else 403 if isinstance(exc, Forbidden) else 422
    return _error_page(request, status, exc.reason)


def on_unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.warning("explorer: a storage server failed: %s", exc)
    retry = exc.retry_after if isinstance(exc, ServiceUnavailable) else 2
    return _error_page(request, 503, "A storage server is unavailable; retry shortly.", **{"Retry-After": str(retry)})


def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("explorer: unhandled error on %s %s", request.method, request.url.path)
    return _error_page(request, 500, "An unexpected error occurred; it has been logged.")


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    NotAuthorizedException: on_not_signed_in,
    HTTPException: on_http_error,
    ValidationException: on_validation,
    BadInput: on_bad_input,
    DomainError: on_domain_error,
    ServiceUnavailable: on_unavailable,
    OperationalError: on_unavailable,
    psycopg.OperationalError: on_unavailable,
    PoolTimeout: on_unavailable,
    RedisError: on_unavailable,
    Exception: on_unexpected,
}

"""Every error leaves as `application/problem+json` (RFC 9457) with the status that says what went
wrong. A bad request never becomes a 500; a server that is down becomes a 503 with Retry-After."""

from __future__ import annotations

import logging
import re
import uuid
from http import HTTPStatus
from typing import Any

import msgspec
import psycopg
import redis.exceptions
from eventsourcing.persistence import OperationalError
from litestar import Request, Response
from litestar.exceptions import (
    ClientException,
    HTTPException,
    NotAuthorizedException,
    ValidationException,
)
from litestar.handlers import HTTPRouteHandler
from litestar.params import ParameterKwarg

from commands.base import PreconditionFailed
from commands.identity import Unauthorized
from domain.errors import Conflict, DomainError, Forbidden, Invalid, NotFound

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"
_FIELD = re.compile(r"field `([^`]+)`")


class FieldError(msgspec.Struct):
    field: str
    message: str


class Problem(msgspec.Struct, omit_defaults=True):
    """An RFC 9457 problem document; `errors` names the offending fields of a 422."""

    status: int
    title: str
    detail: str
    type: str = "about:blank"
    instance: str | None = None
    errors: list[FieldError] | None = None


class ServiceUnavailable(Exception):
    """A dependency is down or a wait ran out; the client should retry after `retry_after` seconds."""

    def __init__(self, detail: str, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


def problem(
    request: Request[Any, Any, Any],
    status: int,
    detail: str,
    *,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[Problem]:
    body = Problem(
        status=status, title=HTTPStatus(status).phrase, detail=detail, instance=request.url.path, errors=errors
    )
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def on_domain_error(request: Request[Any, Any, Any], exc: DomainError) -> Response[Problem]:
    match exc:
        case Invalid():
            return problem(request, 422, exc.reason, errors=[FieldError(exc.field, exc.reason)] if exc.field else None)
        case Conflict():
            return problem(request, 409, exc.reason)
        case NotFound():
            return problem(request, 404, exc.reason)
        case Forbidden():
            return problem(request, 403, exc.reason)
        case _:
            return problem(request, 422, exc.reason)


def on_precondition_failed(request: Request[Any, Any, Any], exc: PreconditionFailed) -> Response[Problem]:
    return problem(request, 412, str(exc), headers={"ETag": f'"{exc.actual}"'})


def on_unauthorized(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    detail = exc.detail if isinstance(exc, NotAuthorizedException) else "invalid credentials or token"
    return problem(request, 401, detail or "authentication required", headers={"WWW-Authenticate": "Bearer"})


def on_validation(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Problem]:
    """Malformed or missing JSON is a 400; well-formed JSON with an unknown field or a bad value is
    a 422 that names the field."""
    errors: list[FieldError] = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        message, key = str(item.get("message", "")), str(item.get("key", ""))
        named = _FIELD.search(message)
        if named:
            errors.append(FieldError(named[1], message))
        elif key not in ("", "data"):
            errors.append(FieldError(_public_name(request, key), message))
        elif message.startswith("Expected `object`"):
            return problem(request, 400, "the request body must be a JSON object")
        elif message == "'data'":
            return problem(request, 400, "the request needs a JSON body")
        else:
            errors.append(FieldError("body", message))
    if not errors:
        return problem(request, 400, exc.detail or "the request is malformed")
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
    return problem(request, 422, detail, errors=errors)


def _public_name(request: Request[Any, Any, Any], key: str) -> str:
    """The name a client sent a parameter by (`from`, `If-Match`), not the handler's argument."""
    handler = request.scope.get("route_handler")
    if not isinstance(handler, HTTPRouteHandler):
        return key
    field = handler.parsed_fn_signature.parameters.get(key)
    kwarg = getattr(field, "kwarg_definition", None)
    name = getattr(kwarg, "name", None) if isinstance(kwarg, ParameterKwarg) else None
    return name or key


def on_http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Problem]:
    status = exc.status_code
    if status >= 500 and status != 503:
        return on_unexpected(request, exc)
    detail = exc.detail or HTTPStatus(status).phrase
    if isinstance(exc, ClientException) and status == 400 and "malformed" in detail:
        return problem(request, 400, detail)
    return problem(request, status, detail, headers=exc.headers)


def on_unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    if isinstance(exc, ServiceUnavailable):
        detail, retry = exc.detail, exc.retry_after
    else:
        log.warning("a dependency failed: %s", exc)
        detail, retry = "a storage server is unavailable; retry shortly", 2
    return problem(request, 503, detail, headers={"Retry-After": str(retry)})


def on_view_missing(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    """A read model's tables are made by the projector when it first runs: until then a query of it
    waits for the projector, like a view that is behind."""
    log.warning("a read model is not there yet (%s); the projector creates it", exc)
    return problem(request, 503, "the read models are not built yet; retry shortly", headers={"Retry-After": "2"})


def correlation_id(request: Request[Any, Any, Any]) -> uuid.UUID:
    """The request's correlation id: the client's `X-Correlation-Id` if it sent a UUID, else one made
    here; the same for the whole request (the events it appends carry it, a 500's log line too)."""
    known = request.scope.get("chronicle_correlation_id")
    if isinstance(known, uuid.UUID):
        return known
    try:
        chosen = uuid.UUID(request.headers.get("X-Correlation-Id") or "")
    except ValueError:
        chosen = uuid.uuid4()
    request.scope["chronicle_correlation_id"] = chosen  # type: ignore[typeddict-unknown-key]  # our own scope key
    return chosen


def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    """The body says nothing of the exception; the log has its traceback under the correlation id,
    which the response carries so a report can be matched with the log."""
    correlation = correlation_id(request)
    log.error(
        "unhandled error on %s %s (correlation id %s)",
        request.method,
        request.url.path,
        correlation,
        exc_info=exc,
    )
    return problem(
        request,
        500,
        f"an unexpected error occurred; it has been logged under correlation id {correlation}",
        headers={"X-Correlation-Id": str(correlation)},
    )


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    DomainError: on_domain_error,
    PreconditionFailed: on_precondition_failed,
    Unauthorized: on_unauthorized,
    NotAuthorizedException: on_unauthorized,
    ValidationException: on_validation,
    HTTPException: on_http_error,
    ServiceUnavailable: on_unavailable,
    OperationalError: on_unavailable,
    # The views' pool (PoolTimeout is one), a connection that broke, a server shutting down.
    psycopg.OperationalError: on_unavailable,
    psycopg.InterfaceError: on_unavailable,
    psycopg.errors.UndefinedTable: on_view_missing,
    redis.exceptions.ConnectionError: on_unavailable,
    redis.exceptions.TimeoutError: on_unavailable,
    redis.exceptions.ReadOnlyError: on_unavailable,
    redis.exceptions.BusyLoadingError: on_unavailable,
    ConnectionError: on_unavailable,
    TimeoutError: on_unavailable,
    Exception: on_unexpected,
}

"""What the API shows of itself: `GET /metrics` (Prometheus, summed over granian's worker
processes), request metrics by route template, the request span (OpenTelemetry's ASGI middleware,
which honours an incoming `traceparent`), and one access log line per request with the request's
correlation id (`X-Correlation-Id`, sent back on every response). The request metrics are taken by
the same middleware as the log line (one wrapper per request instead of two)."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import structlog
from litestar.enums import ScopeType
from litestar.middleware.base import DefineMiddleware
from litestar.plugins.prometheus import PrometheusController
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from infra.observe import logs, tracing
from infra.observe.metrics import HTTP_REQUESTS, HTTP_SECONDS
from infra.settings import Settings

_CORRELATION = b"x-correlation-id"
_access = logging.getLogger("chronicle.access")
_access_log = structlog.get_logger("chronicle.access")


class MetricsController(PrometheusController):
    """`GET /metrics`: the Prometheus text format; no token needed, not part of the API's schema."""

    include_in_schema = False
    opt = {"exclude_from_auth": True}


def _correlation_of(scope: Scope) -> uuid.UUID:
    for name, value in scope["headers"]:
        if name == _CORRELATION:
            try:
                return uuid.UUID(value.decode("latin-1"))
            except ValueError:
                break  # a command route answers 400 for it; the log still needs an id
    return uuid.uuid4()


class RequestLog:
    """Binds the request's correlation id (the client's `X-Correlation-Id`, else a new one) to
    every log line written while serving it, returns it as `X-Correlation-Id`, writes one access
    line (method, route template, status, duration, actor) and counts the request by route
    template, method and status, with its latency (unless `CHRONICLE_METRICS=off`)."""

    def __init__(self, app: ASGIApp, metrics: bool = True) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        correlation = _correlation_of(scope)
        logs.bind_request(correlation)
        header = (_CORRELATION, str(correlation).encode())
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers") or [])
                if not any(name.lower() == _CORRELATION for name, _ in headers):
                    message = {**message, "headers": [*headers, header]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("path_template") or scope["path"]
            method = scope["method"]
            if self.metrics and route != "/metrics":
                HTTP_REQUESTS.labels(method, route, str(status)).inc()
                HTTP_SECONDS.labels(method, route).observe(elapsed)
            if _access.isEnabledFor(logging.INFO):
                user = scope.get("user")
                _access_log.info(
                    "request",
                    method=method,
                    route=route,
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                    actor=str(user.user_id) if hasattr(user, "user_id") else None,
                )


def middleware(settings: Settings) -> list[Any]:
    """Outermost first: the request span, then the log line (inside the span, so it carries the
    trace id, and counts it)."""
    stack: list[Any] = []
    if tracing.setup("chronicle-api"):
        from litestar.plugins.opentelemetry import OpenTelemetryConfig

        stack.append(OpenTelemetryConfig(exclude=["^/metrics"], exclude_spans=["receive", "send"]).middleware)
    stack.append(DefineMiddleware(RequestLog, metrics=settings.metrics))
    return stack

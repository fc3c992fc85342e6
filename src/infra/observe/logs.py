"""Structured logs (structlog over the standard logging module): JSON lines when
`CHRONICLE_LOG_FORMAT=json`, readable console lines otherwise. Every line carries the ids bound to
the current context (a request's correlation id) and the current trace id, including lines that
the standard `logging` calls of Chronicle and its libraries write."""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

import structlog

from infra.observe import tracing

FORMATS = ("console", "json")
_correlation: ContextVar[uuid.UUID | None] = ContextVar("chronicle_correlation_id", default=None)


def _add_trace_id(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    trace_id = tracing.trace_id()
    if trace_id is not None:
        event.setdefault("trace_id", trace_id)
    return event


def configure(level: str = "INFO", fmt: str = "console") -> None:
    """Sends every log line (structlog's and the standard library's) to stderr in `fmt`."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _add_trace_id,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def correlation_id() -> uuid.UUID | None:
    """The correlation id of the request being served (None outside a request)."""
    return _correlation.get()


def bind_request(correlation: uuid.UUID) -> None:
    """Binds the request's correlation id to the current context: every log line written while
    serving it carries the id. (Each request runs in its own task, so the binding ends with it.)"""
    _correlation.set(correlation)
    structlog.contextvars.bind_contextvars(correlation_id=str(correlation))

"""OpenTelemetry traces, W3C Trace Context, configured by the standard `OTEL_*` variables.

Tracing is on when an OTLP endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) and not turned off (`OTEL_SDK_DISABLED=true`,
`OTEL_TRACES_EXPORTER=none`). Spans go out over OTLP/HTTP in batches (`OTEL_BSP_*`); the
sampler, the service name and the resource come from `OTEL_TRACES_SAMPLER`, `OTEL_SERVICE_NAME`
and `OTEL_RESOURCE_ATTRIBUTES` as the SDK reads them. When it is off, `span` is a null context
and nothing else runs: tracing then costs one flag test per call site.

How a trace crosses processes: a command stores its span's `traceparent` with every event it
appends (the `trace_parent` column); the relay publishes each event in a span that continues it
and sends that span's `traceparent` as a header of the NATS message; a projector's batch span
continues the first traced event of the batch and links to every one; the saga decides each
event in a span that continues it, and the events it appends carry that span on.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link
from opentelemetry.trace import SpanKind as SpanKind  # callers name span kinds through this module
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger(__name__)
_propagator = TraceContextTextMapPropagator()
_enabled = False
_tracer: trace.Tracer = trace.NoOpTracer()


def wanted(env: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Whether the environment asks for traces to be exported."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def setup(service: str) -> bool:
    """Starts exporting this process's spans if the environment asks for it; True if it does.
    `service` names the process unless `OTEL_SERVICE_NAME` does."""
    global _enabled, _tracer
    if _enabled or not wanted():
        return _enabled
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _tracer = provider.get_tracer("chronicle")
    _enabled = True
    log.info("tracing: exporting spans of %s over OTLP/HTTP", resource.attributes.get("service.name"))
    return True


def enabled() -> bool:
    return _enabled


def context_of(traceparent: str | None) -> otel_context.Context | None:
    """The remote context a `traceparent` names (None if it names none)."""
    if not traceparent:
        return None
    ctx = _propagator.extract({"traceparent": traceparent})
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def links_to(traceparents: Iterable[str | None]) -> list[Link]:
    links = []
    for traceparent in traceparents:
        ctx = context_of(traceparent)
        if ctx is not None:
            links.append(Link(trace.get_current_span(ctx).get_span_context()))
    return links


@contextlib.contextmanager
def _span(
    name: str, parent: str | None, links: list[Link], kind: SpanKind, attributes: dict[str, Any] | None
) -> Iterator[None]:
    with _tracer.start_as_current_span(name, context=context_of(parent), links=links, kind=kind, attributes=attributes):
        yield


def span(
    name: str,
    *,
    parent: str | None = None,
    links: Iterable[str | None] = (),
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: dict[str, Any] | None = None,
) -> contextlib.AbstractContextManager[None]:
    """A span around a block, child of the current span, or of the remote `parent` (a
    traceparent) when given; linked to each of `links`. A null context while tracing is off."""
    if not _enabled:
        return contextlib.nullcontext()
    return _span(name, parent, links_to(links), kind, attributes)


def annotate(attributes: dict[str, Any]) -> None:
    """Adds attributes to the current span (the request's, in the API), if it is recorded. Cheaper
    than a child span (creating, ending and exporting one costs about 60 µs here), so the write
    path annotates the request span instead of opening spans of its own."""
    if not _enabled:
        return
    current = trace.get_current_span()
    if current.is_recording():
        current.set_attributes(attributes)


def traceparent() -> str | None:
    """The current span as a W3C `traceparent` header value (None outside any sampled span)."""
    if not _enabled:
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


def trace_id() -> str | None:
    """The current trace's id in hex, for log lines (None outside any span)."""
    if not _enabled:
        return None
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def hop(name: str, parent: str | None, kind: SpanKind = SpanKind.PRODUCER) -> str | None:
    """A span for handing something on (publishing an event), continuing `parent`: the
    traceparent to send with it. With tracing off (or no parent), `parent` itself is passed on."""
    if not _enabled or parent is None:
        return parent
    with _span(name, parent, [], kind, None):
        return traceparent()

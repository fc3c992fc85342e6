"""Tracing's switch (the standard OTEL_* variables) and the structured log lines."""

from __future__ import annotations

import contextvars
import json
import logging
import uuid

import pytest

from infra.observe import logs, tracing


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
    ],
)
def test_tracing_is_on_only_when_an_otlp_endpoint_is_set_and_not_disabled(env: dict[str, str], on: bool) -> None:
    assert tracing.wanted(env) is on


def test_with_tracing_off_a_span_costs_a_null_context_and_carries_no_traceparent() -> None:
    assert not tracing.enabled()
    with tracing.span("anything", parent="00-" + "1" * 32 + "-" + "2" * 16 + "-01"):
        assert tracing.traceparent() is None and tracing.trace_id() is None
    assert (
        tracing.hop("publish", "00-" + "1" * 32 + "-" + "2" * 16 + "-01") == "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    )


def test_json_log_lines_carry_the_bound_correlation_id(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers, root.level
    try:
        logs.configure("INFO", "json")
        correlation = uuid.uuid4()

        def in_a_request() -> uuid.UUID | None:  # its own context, as each request's task has
            logs.bind_request(correlation)
            logging.getLogger("chronicle.test").info("stored %d events", 3)
            return logs.correlation_id()

        seen = contextvars.copy_context().run(in_a_request)
        line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    finally:
        root.handlers, root.level = handlers, level
    assert line["event"] == "stored 3 events" and line["level"] == "info" and line["logger"] == "chronicle.test"
    assert line["correlation_id"] == str(correlation) and seen == correlation
    assert logs.correlation_id() is None  # outside the request, no id

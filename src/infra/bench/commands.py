"""`chronicle bench commands`: a command route that loads, decides and appends (task edit), driven
over HTTP by many concurrent connections, against a ceiling served the same way in the same run
(a bare Litestar POST doing one pooled INSERT). The command route is served twice: with metrics
and tracing off, and with both on (Prometheus multiprocess metrics, every request traced and its
spans exported over OTLP/HTTP to a receiver in this process). The three servers run at once on
their own ports; the load alternates between them in rounds. Everything runs in a scratch
database dropped afterwards."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg

from infra.bench.ceiling import TABLE
from infra.bench.load import LoadResult, drive
from infra.bench.stack import api_argv, ceiling_argv, prepare, scratch_env, serve
from infra.settings import Settings


class EditRandomTask:
    """Each request edits one of the prepared tasks, chosen at random, to a new title."""

    def __init__(self, token: str, task_ids: list[str]) -> None:
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.task_ids = task_ids

    def __call__(self, rng: random.Random) -> tuple[str, str, bytes, dict[str, str]]:
        task = rng.choice(self.task_ids)
        body = b'{"title":"Edited %d"}' % rng.randrange(1 << 30)
        return "POST", f"/v1/tasks/{task}/edit", body, self.headers


class InsertRow:
    headers = {"Content-Type": "application/json"}

    def __call__(self, rng: random.Random) -> tuple[str, str, bytes, dict[str, str]]:
        return "POST", "/ceiling", b'{"title":"Edited %d"}' % rng.randrange(1 << 30), self.headers


def _prepare(base: str, tasks: int) -> EditRandomTask:
    prepared = prepare(base, tasks)
    return EditRandomTask(prepared.token, prepared.task_ids)


class SpanSink:
    """A local OTLP/HTTP endpoint that accepts every export and counts the requests and bytes."""

    def __init__(self) -> None:
        self.exports = 0
        self.bytes = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                sink.exports += 1
                sink.bytes += len(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"


@contextmanager
def span_sink() -> Iterator[SpanSink]:
    sink = SpanSink()
    thread = threading.Thread(target=sink.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        sink.server.shutdown()


def _without_otel(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith("OTEL_")}


def bench_commands(
    settings: Settings,
    seconds: float,
    connections: int = 32,
    workers: int = 1,
    tasks: int = 500,
    rounds: int = 3,
    trace_sample: float = 1.0,
) -> dict[str, Any]:
    with scratch_env(settings) as env, span_sink() as sink:
        with psycopg.connect(env["CHRONICLE_DATABASE_URL"], autocommit=True) as conn:
            conn.execute(TABLE)
        plain = {**_without_otel(env), "CHRONICLE_METRICS": "off"}
        observed_env = {
            **_without_otel(env),
            "CHRONICLE_METRICS": "on",
            "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
            "OTEL_SERVICE_NAME": "chronicle-bench",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": str(trace_sample),
        }
        with (
            serve(api_argv(workers), plain, "/schema/openapi.json") as api,
            serve(api_argv(workers), observed_env, "/schema/openapi.json") as observed_api,
            serve(ceiling_argv(workers), plain, "/") as ceiling,
        ):
            edit = _prepare(api, tasks)
            observed_edit = _prepare(observed_api, tasks)
            drive(api, edit, connections, 1.0)  # warm-up
            drive(observed_api, observed_edit, connections, 1.0)
            drive(ceiling, InsertRow(), connections, 1.0)
            exports_before = sink.exports
            command, observed, bare = LoadResult(0.0), LoadResult(0.0), LoadResult(0.0)
            for _ in range(rounds):
                command.merge(drive(api, edit, connections, seconds / rounds))
                observed.merge(drive(observed_api, observed_edit, connections, seconds / rounds))
                bare.merge(drive(ceiling, InsertRow(), connections, seconds / rounds))
            exports = sink.exports - exports_before
    return {
        "bench": "commands",
        "route": "POST /v1/tasks/{id}/edit",
        "seconds": seconds,
        "connections": connections,
        "workers": workers,
        "command": command.summary(),
        "command_observed": {**observed.summary(), "trace_sample": trace_sample, "span_exports": exports},
        "observed_ratio": round(observed.rate() / command.rate(), 3),
        "ceiling": bare.summary(),
        "ratio": round(command.rate() / bare.rate(), 3),
    }

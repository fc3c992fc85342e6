"""Seeing Chronicle run: Prometheus metrics from a multi-worker API, one trace across the API, the
relay, the projector and the saga (received by a small OTLP/HTTP receiver of the test's own), and
a JSON access log line per request.

One stack for the module, on a database and namespace of its own: `chronicle api --workers 2`,
relay, projector and saga, every process exporting its spans to the receiver."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from commands.base import Context
from domain.identity import Role
from infra.bootstrap import bootstrap
from infra.devstack.embedded import ServerUrls
from infra.devstack.scratch import create_database, drop_database
from infra.eventstore.migrate import migrate
from infra.settings import Settings
from tests.conftest import new_namespace
from tests.integration.commerce import product, wait_order
from tests.integration.http import Api, User, api_env, free_port, scrape, value
from tests.integration.pipeline import all_roles, running, wait_active, wait_caught_up
from tests.waiting import eventually


@dataclasses.dataclass
class Span:
    service: str
    trace_id: str
    name: str


class Receiver:
    """An OTLP/HTTP trace receiver: keeps every span POSTed to /v1/traces (protobuf)."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                found = []
                for resource_spans in request.resource_spans:
                    attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            found.append(Span(attributes.get("service.name", ""), span.trace_id.hex(), span.name))
                with receiver.lock:
                    receiver.spans += found
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def services_in(self, trace_id: str) -> set[str]:
        with self.lock:
            return {s.service for s in self.spans if s.trace_id == trace_id}


@dataclasses.dataclass
class Stack:
    api: Api
    settings: Settings
    receiver: Receiver
    log: Path
    manager: User


@pytest.fixture(scope="module")
def stack(servers: ServerUrls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    url = create_database(servers.database_url)
    migrate(url)
    settings = Settings(
        database_url=url, nats_url=servers.nats_url, redis_url=servers.redis_url, namespace=new_namespace()
    )
    receiver = Receiver()
    receiver.thread.start()
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    log = tmp_path_factory.mktemp("observability") / "api.log"
    port = free_port()
    env = api_env(settings, CHRONICLE_LOG_FORMAT="json", CHRONICLE_LOG_LEVEL="INFO", **otel)
    with open(log, "wb") as out:
        api_proc = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "api", "--port", str(port), "--workers", "2"],
            env=env,
            stderr=out,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
    chronicle = bootstrap(settings)
    try:
        with running(settings, "relay", "projector", "saga", **otel):
            base = f"http://127.0.0.1:{port}"
            eventually(lambda: answering(base), what="the API", timeout=60)
            wait_active(settings, *all_roles(saga=True))
            api = Api(base)
            manager = api.register("Mara Manager")
            chronicle.identity.grant(Context("tests.make_manager", system_actor="tests"), manager.id, Role.MANAGER)
            yield Stack(api, settings, receiver, log, api.relogin(manager))
            api.http.close()
    finally:
        api_proc.terminate()
        api_proc.wait(timeout=20)
        chronicle.close()
        receiver.server.shutdown()
        drop_database(url)


def answering(base: str) -> bool:
    try:
        return httpx.get(f"{base}/schema/openapi.json", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_metrics_count_every_request_and_command_across_api_workers(stack: Stack) -> None:
    base = stack.api.base
    before = scrape(base)
    sent = 12
    for i in range(sent):  # a new connection per request: spread over both workers
        r = httpx.post(f"{base}/v1/projects", json={"name": f"Metered {i}"}, headers=stack.manager.auth)
        assert r.status_code == 201, r.text
    project = r.json()["id"]
    stale = httpx.post(
        f"{base}/v1/projects/{project}/rename", json={"name": "x"}, headers={**stack.manager.auth, "If-Match": "7"}
    )
    assert stale.status_code == 412
    after = scrape(base)
    request = {"path": "/v1/projects", "method": "POST", "status_code": "201"}
    assert (
        value(after, "chronicle_http_requests_total", **request)
        - value(before, "chronicle_http_requests_total", **request)
        == sent
    )
    route = {"path": "/v1/projects", "method": "POST"}
    assert (
        value(after, "chronicle_http_request_duration_seconds_count", **route)
        - value(before, "chronicle_http_request_duration_seconds_count", **route)
        == sent
    )
    ok = {"command": "projects.create", "outcome": "ok"}
    assert value(after, "chronicle_commands_total", **ok) - value(before, "chronicle_commands_total", **ok) == sent
    conflict = {"command": "projects.rename", "outcome": "conflict"}
    assert (
        value(after, "chronicle_commands_total", **conflict) - value(before, "chronicle_commands_total", **conflict)
        == 1
    )
    assert value(after, "chronicle_appended_events_total") - value(before, "chronicle_appended_events_total") == sent
    assert "/metrics" not in httpx.get(f"{base}/schema/openapi.json").json()["paths"]


def test_metrics_are_the_same_sums_whichever_worker_answers(stack: Stack) -> None:
    scrapes = [scrape(stack.api.base) for _ in range(6)]
    totals = {value(s, "chronicle_commands_total") for s in scrapes}
    assert len(totals) == 1 and totals.pop() > 0


def test_one_trace_runs_from_the_request_through_relay_projector_and_saga(stack: Stack) -> None:
    sku, _ = product(stack.api, stack.manager, stock=5)
    # A projector delivers a batch in one span that continues the batch's first traced event and links
    # the others: were the product's events still queued, the order's could share their batch, and its
    # trace would reach the projector only as a link (seen here under load). The views catch up first.
    wait_caught_up(stack.settings)
    trace_id = uuid.uuid4().hex
    traceparent = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"
    r = stack.api.post("/v1/orders", {"lines": [{"sku": sku, "quantity": 2}]}, stack.manager, traceparent=traceparent)
    assert r.status_code == 201, r.text
    order = wait_order(stack.api, stack.manager, r.json()["id"], {"reserved"})
    assert order["status"] == "reserved"
    wanted = {"chronicle-api", "chronicle-relay", "chronicle-projector", "chronicle-saga"}

    def all_services() -> bool:
        found = stack.receiver.services_in(trace_id)
        assert wanted <= found, f"spans of trace {trace_id} came from {sorted(found)} only"
        return True

    eventually(all_services, what="spans of the order's trace from every process", timeout=30)
    with psycopg.connect(stack.settings.database_url or "") as conn:
        rows = conn.execute(
            "SELECT type, trace_parent FROM events WHERE correlation_id = %s ORDER BY notification_id",
            (r.headers["X-Correlation-Id"],),
        ).fetchall()
    assert {t for t, _ in rows} >= {"Order.Placed", "Order.Reserved"}
    assert all(tp and tp.split("-")[1] == trace_id for _, tp in rows), rows  # the saga's appends carry it on


def test_every_request_writes_one_json_access_line_with_its_correlation_id(stack: Stack) -> None:
    r = stack.api.post("/v1/projects", {"name": "Logged"}, stack.manager)
    assert r.status_code == 201
    correlation = r.headers["X-Correlation-Id"]
    health = stack.api.get("/v1/health")
    health_correlation = health.headers["X-Correlation-Id"]
    assert health_correlation != correlation

    def logged() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in stack.log.read_text().splitlines() if line.startswith("{")]
        mine = [line for line in lines if line.get("correlation_id") == correlation and line.get("event") == "request"]
        assert len(mine) == 1, f"{len(mine)} access lines for {correlation}"
        assert any(line.get("correlation_id") == health_correlation for line in lines)
        return mine

    (line,) = eventually(logged, what="the access line of the request", timeout=10)
    assert line["route"] == "/v1/projects" and line["method"] == "POST" and line["status"] == 201
    assert line["actor"] == str(stack.manager.id) and line["duration_ms"] > 0
    assert len(line["trace_id"]) == 32 and line["level"] == "info" and line["logger"] == "chronicle.access"
    assert all(line.startswith("{") for line in stack.log.read_text().splitlines() if line.strip()), "a non-JSON line"

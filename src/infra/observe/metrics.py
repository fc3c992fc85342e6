"""Chronicle's Prometheus metrics, all defined here (prometheus-client), in base units.

The API's granian workers are processes: `chronicle api` points `PROMETHEUS_MULTIPROC_DIR` at a
fresh folder before any worker starts, so each worker writes its values there and `GET /metrics`
(Litestar's PrometheusController) adds them up. The relay, projector and saga are one process
each and serve their own registry on `--metrics-port` (`serve`).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

HTTP_REQUESTS = Counter(
    "chronicle_http_requests_total",
    "HTTP requests by route template, method and status",
    ["method", "path", "status_code"],
)
HTTP_SECONDS = Histogram(
    "chronicle_http_request_duration_seconds", "HTTP request latency by route template", ["method", "path"]
)
COMMANDS = Counter("chronicle_commands_total", "Commands by name and outcome", ["command", "outcome"])
COMMAND_SECONDS = Histogram("chronicle_command_duration_seconds", "Time to run a command (load, decide, append)")
APPEND_SECONDS = Histogram(
    "chronicle_append_duration_seconds",
    "Time of one append to the event store",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
APPENDED_EVENTS = Counter("chronicle_appended_events_total", "Events (rows) appended to the event store")
POOL_IN_USE = Gauge(
    "chronicle_eventstore_connections_in_use", "Event store connections checked out", multiprocess_mode="livesum"
)
POOL_WAITING = Gauge(
    "chronicle_eventstore_connections_waiting",
    "Threads waiting for an event store connection",
    multiprocess_mode="livesum",
)
CACHE_HITS = Counter("chronicle_cache_hits_total", "Lookups answered by a cache", ["cache"])
CACHE_MISSES = Counter("chronicle_cache_misses_total", "Lookups a cache could not answer", ["cache"])
CACHE_EVICTIONS = Counter("chronicle_cache_evictions_total", "Entries a full cache let go of", ["cache"])
CACHE_BYTES = Gauge(
    "chronicle_cache_bytes",
    "Bytes a cache holds (the largest of the API's workers)",
    ["cache"],
    multiprocess_mode="livemax",
)
RATE_LIMIT_REFUSALS = Counter("chronicle_rate_limit_refusals_total", "Requests refused with 429", ["limit"])

RELAY_PUBLISHED = Counter("chronicle_relay_published_events_total", "Events the relay published to JetStream")
RELAY_BATCHES = Counter("chronicle_relay_batches_total", "Batches the relay published and recorded")
RELAY_LAG_EVENTS = Gauge("chronicle_relay_lag_events", "Events in the log the relay has not published yet")
RELAY_LAG_SECONDS = Gauge("chronicle_relay_lag_seconds", "Age of the oldest event the relay has not published")

_P = ["projection", "partition"]  # partition: "k/P" for a partitioned projection's lane, else ""
PROJECTION_CHECKPOINT = Gauge("chronicle_projection_checkpoint", "Position of the last event applied", _P)
PROJECTION_LAG_EVENTS = Gauge("chronicle_projection_lag_events", "Events in the log not applied yet", _P)
PROJECTION_LAG_SECONDS = Gauge("chronicle_projection_lag_seconds", "Age of the oldest event not applied yet", _P)
PROJECTION_APPLIED = Counter("chronicle_projection_applied_events_total", "Events applied to the view", _P)
PROJECTION_BATCH_SECONDS = Histogram(
    "chronicle_projection_batch_duration_seconds", "Time to apply one batch with its checkpoint", _P
)
PROJECTION_PARKED = Gauge("chronicle_projection_parked", "1 while parked on a poison event", _P)
PROJECTION_DEAD_LETTERS = Gauge("chronicle_projection_dead_letters", "Parked events not retried or skipped yet", _P)

SAGA_DECISIONS = Counter("chronicle_saga_decisions_total", "Order events the saga decided on, by kind", ["kind"])
SAGA_DECISION_SECONDS = Histogram("chronicle_saga_decision_duration_seconds", "Time to decide on one order event")


def serve(port: int | None, role: str) -> None:
    """Serves this process's metrics on `port` (all addresses) and says so on stdout."""
    if port is None:
        return
    start_http_server(port)
    print(f"{role} metrics on http://127.0.0.1:{port}/metrics", flush=True)


def sample_pool(database: Any, every: float = 1.0) -> None:
    """Copies the event store pool's counts (`in_use`, `waiting`) into the gauges every second,
    from a daemon thread: cheaper than writing the gauges on every checkout (each write of a
    multiprocess value is a locked file write)."""

    def run() -> None:
        while not database.closed:
            POOL_IN_USE.set(database.in_use)
            POOL_WAITING.set(database.waiting)
            time.sleep(every)

    threading.Thread(target=run, name="pool-metrics", daemon=True).start()

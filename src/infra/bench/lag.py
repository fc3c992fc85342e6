"""`chronicle bench lag`: commands at a steady rate through the HTTP API; for each, the time from the
command's response until a query route shows its effect (`GET /v1/tasks/{id}` with the command's
`X-Min-Position`, checked to carry the new title). API, relay and projectors run as in production."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from itertools import cycle
from typing import Any

from infra.bench.load import Connection, LoadResult
from infra.bench.stack import Prepared, api_argv, background, prepare, scratch_env, serve
from infra.settings import Settings


class Probes:
    def __init__(self) -> None:
        self.lags = LoadResult(0.0)
        self.command = LoadResult(0.0)
        self.failed: dict[str, int] = {}

    def fail(self, why: str) -> None:
        self.failed[why] = self.failed.get(why, 0) + 1


async def _probe(pool: asyncio.Queue[Connection], prepared: Prepared, task: str, n: str, probes: Probes) -> None:
    conn = await pool.get()
    try:
        headers = {**prepared.auth, "Content-Type": "application/json"}
        started = time.perf_counter()
        status, body = await conn.request(
            "POST", f"/v1/tasks/{task}/edit", b'{"title":"Probe %s"}' % n.encode(), headers
        )
        answered = time.perf_counter()
        probes.command.latencies_ms.append((answered - started) * 1000)
        if status != 200:
            probes.fail(f"command {status}")
            return
        position = json.loads(body)["position"]
        status, body = await conn.request(
            "GET", f"/v1/tasks/{task}", headers={**prepared.auth, "X-Min-Position": position}
        )
        if status != 200 or json.loads(body)["title"] != f"Probe {n}":
            probes.fail(f"query {status}")
            return
        probes.lags.latencies_ms.append((time.perf_counter() - answered) * 1000)
    finally:
        pool.put_nowait(conn)


async def drive_lag(base: str, prepared: Prepared, rate: float, seconds: float, connections: int = 96) -> Probes:
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await Connection.open(base))
    probes, tasks, run = Probes(), cycle(prepared.task_ids), uuid.uuid4().hex[:8]
    running: set[asyncio.Task[None]] = set()
    started = time.perf_counter()
    total = int(rate * seconds)
    for n in range(total):
        delay = started + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        job = asyncio.create_task(_probe(pool, prepared, next(tasks), f"{run}-{n}", probes))
        running.add(job)
        job.add_done_callback(running.discard)
    await asyncio.gather(*running)
    elapsed = time.perf_counter() - started
    probes.lags.seconds = probes.command.seconds = elapsed
    while not pool.empty():
        pool.get_nowait().close()
    return probes


def bench_lag(settings: Settings, rate: float, seconds: float, tasks: int = 2000) -> dict[str, Any]:
    with (
        scratch_env(settings) as env,
        serve(api_argv(), env, "/schema/openapi.json") as api,
        background(env, "relay", "projector"),
    ):
        prepared = prepare(api, tasks)
        asyncio.run(drive_lag(api, prepared, min(rate, 100), 2.0))  # warm-up
        probes = asyncio.run(drive_lag(api, prepared, rate, seconds))
    lag = probes.lags
    return {
        "bench": "lag",
        "target_rate": rate,
        "seconds": seconds,
        "achieved_rate": round(len(lag.latencies_ms) / lag.seconds, 1),
        "lag_ms": {
            "p50": round(lag.percentile(50), 2),
            "p95": round(lag.percentile(95), 2),
            "p99": round(lag.percentile(99), 2),
        },
        "command_ms": {"p50": round(probes.command.percentile(50), 2), "p99": round(probes.command.percentile(99), 2)},
        "failed": probes.failed,
    }

"""`GET /v1/health`: whether this process can reach what it needs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import msgspec
from litestar import Controller, Response, get
from litestar.di import Provide
from litestar.openapi import ResponseSpec

from api.auth import PUBLIC
from api.runtime import Runtime, get_runtime


class Check(msgspec.Struct, omit_defaults=True):
    ok: bool
    latency_ms: float | None = None
    detail: str | None = None


class Health(msgspec.Struct):
    status: Literal["ok", "degraded"]
    checks: dict[str, Check]


async def _timed(probe: Callable[[], Awaitable[Any]], timeout: float = 2.0) -> Check:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(probe(), timeout)
    except Exception as e:  # a failed probe is the answer, not an error of the route
        return Check(ok=False, detail=f"{type(e).__name__}: {e}"[:300])
    return Check(ok=True, latency_ms=round((time.perf_counter() - started) * 1000, 2))


def _database_ping(runtime: Runtime) -> None:
    with runtime.chronicle.database.connection() as conn:
        conn.execute("SELECT 1")


async def _nats_ping(runtime: Runtime) -> None:
    if runtime.nats is None or not runtime.nats.is_connected:
        raise ConnectionError("not connected")
    await runtime.nats.flush(timeout=1)


class HealthController(Controller):
    path = "/v1/health"
    tags = ["health"]
    opt = PUBLIC
    dependencies = {"runtime": Provide(get_runtime, sync_to_thread=False)}

    @get(operation_id="GetHealth", summary="Reachability of the servers this process needs",
         responses={503: ResponseSpec(data_container=Health, description="A server is unreachable")})
    async def health(self, runtime: Runtime) -> Response[Health]:
        database, redis_check, nats_check = await asyncio.gather(
            _timed(lambda: runtime.run(_database_ping, runtime)),
            _timed(lambda: runtime.redis.ping()),
            _timed(lambda: _nats_ping(runtime)),
        )
        checks = {"database": database, "redis": redis_check, "nats": nats_check}
        ok = all(c.ok for c in checks.values())
        return Response(Health(status="ok" if ok else "degraded", checks=checks), status_code=200 if ok else 503)

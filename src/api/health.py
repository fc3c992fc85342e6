"""`GET /v1/health`: whether this process can reach what it needs.

Anyone may ask; an anonymous caller gets the overall status and each check's ok only, from a
measurement at most a second old that one request at a time makes (so a flood of health requests
costs one measurement a second). Admins and auditors get the whole measurement, made for them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import msgspec
from litestar import Controller, Request, Response, get
from litestar.openapi import ResponseSpec

from api.auth import PUBLIC, optional_actor
from api.contract import public
from api.queries.common import checkpoints
from api.runtime import RUNTIME, Runtime
from domain.identity import Role
from infra.delivery.saga import OrderSagaProcess
from infra.eventstore.recorder import head_position, lags
from projections import all_projections

PUBLIC_HEALTH_MAX_AGE_S = 1.0


class Check(msgspec.Struct, omit_defaults=True):
    ok: bool
    latency_ms: float | None = None
    detail: str | None = None


class ProjectionHealth(msgspec.Struct):
    name: str
    kind: str
    version: int
    state: Literal["running", "parked"]
    checkpoint: str
    lag_events: int
    lag_seconds: float
    error: str | None = None


class RelayHealth(msgspec.Struct):
    position: str
    lag_events: int
    lag_seconds: float


class Health(msgspec.Struct):
    """`lag_events` counts up to 100,000; `oldest_transaction_seconds` is the age of the oldest open
    transaction that holds a transaction id, which holds back every reader of the log (the gate)."""

    status: Literal["ok", "degraded"]
    checks: dict[str, Check]
    head: str | None = None
    relay: RelayHealth | None = None
    projections: list[ProjectionHealth] = msgspec.field(default_factory=list)
    oldest_transaction_seconds: float | None = None


LAG_CAP = 100_000


class PublicCheck(msgspec.Struct):
    ok: bool


class PublicHealth(msgspec.Struct):
    """What anyone may know: the status, and which checks pass."""

    status: Literal["ok", "degraded"]
    checks: dict[str, PublicCheck]


class HealthCache:
    """The last measurement and when it was made; one measurement at a time."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.measured_at = -1e9
        self.health: Health | None = None


async def _pipeline(runtime: Runtime, health: Health) -> None:
    names = [p.name for p in all_projections()] + [OrderSagaProcess.name]
    points = await checkpoints(runtime, names)
    async with runtime.views.connection() as conn:
        head = await head_position(conn)
        health.head = str(head) if head else None
        relay = await (await conn.execute("SELECT position FROM relay_state")).fetchone()
        rows = await (
            await conn.execute(
                "SELECT projection, kind, live_version, state, error FROM projections ORDER BY projection"
            )
        ).fetchall()
        behind = await lags(conn, [*(points.get(r[0], 0) for r in rows), *(relay or ())], cap=LAG_CAP)
        if relay is not None:
            lag = behind[relay[0]]
            health.relay = RelayHealth(str(relay[0]), lag.events, lag.seconds)
        for name, kind, version, state, error in rows:
            position = points.get(name, 0)
            lag = behind[position]
            health.projections.append(
                ProjectionHealth(name, kind, version, state, str(position), lag.events, lag.seconds, error)
            )
        oldest = await (
            await conn.execute(
                # clock_timestamp(), not now(): now() is when this statement's own transaction began,
                # which may be after another transaction's start was read, giving a negative age.
                "SELECT greatest(0, extract(epoch FROM clock_timestamp() - min(xact_start))) FROM pg_stat_activity"
                " WHERE backend_xid IS NOT NULL"
            )
        ).fetchone()
        health.oldest_transaction_seconds = round(float(oldest[0]), 3) if oldest and oldest[0] is not None else 0.0


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


ANY_HEALTH: Any = Health | PublicHealth  # the body of a 503: detailed for admins and auditors


class HealthController(Controller):
    path = "/v1/health"
    tags = ["health"]
    opt = PUBLIC
    dependencies = RUNTIME

    @get(
        operation_id="GetHealth",
        summary="Reachability of the servers; for admins and auditors, relay and projections' lag",
        responses={
            **public(rate_limited=False),
            503: ResponseSpec(
                data_container=ANY_HEALTH, description="A server is unreachable", generate_examples=False
            ),
        },
    )
    async def health(self, request: Request[Any, Any, Any], runtime: Runtime) -> Response[Health | PublicHealth]:
        actor = await optional_actor(request)
        if actor is not None and actor.roles & {Role.ADMIN, Role.AUDITOR}:
            return _answer(await measure(runtime), detailed=True)
        return _answer(await _recent(runtime), detailed=False)


def _answer(health: Health, *, detailed: bool) -> Response[Health | PublicHealth]:
    reachable = all(c.ok for c in health.checks.values())
    body: Health | PublicHealth = (
        health
        if detailed
        else PublicHealth(health.status, {name: PublicCheck(c.ok) for name, c in health.checks.items()})
    )
    return Response(body, status_code=200 if reachable else 503, headers=None if reachable else {"Retry-After": "1"})


async def _recent(runtime: Runtime) -> Health:
    if runtime.health_cache is None:
        runtime.health_cache = HealthCache()
    cache: HealthCache = runtime.health_cache
    async with cache.lock:
        if cache.health is None or time.monotonic() - cache.measured_at > PUBLIC_HEALTH_MAX_AGE_S:
            cache.health = await measure(runtime)
            cache.measured_at = time.monotonic()
        return cache.health


async def measure(runtime: Runtime) -> Health:
    database, redis_check, nats_check = await asyncio.gather(
        _timed(lambda: runtime.run(_database_ping, runtime)),
        _timed(lambda: runtime.redis.ping()),
        _timed(lambda: _nats_ping(runtime)),
    )
    checks = {"database": database, "redis": redis_check, "nats": nats_check}
    reachable = all(c.ok for c in checks.values())
    health = Health(status="ok" if reachable else "degraded", checks=checks)
    if database.ok and redis_check.ok:
        await _pipeline(runtime, health)
    if any(p.state != "running" for p in health.projections):
        health.status = "degraded"
    return health

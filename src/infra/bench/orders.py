"""`chronicle bench orders`: orders at a steady rate through the HTTP API against a small hot set
of SKUs, with the API, relay, projectors and the order saga running as in production.

Latency is read from the log afterwards, where both ends are recorded: from an order's
`Order.Placed` to the saga's `Order.Reserved` or `Order.Rejected`. The floor is the same latency
measured in the same run with one order at a time on an idle stack; the stock check compares,
for every SKU, reserved + available + committed with received + adjustments, in the write model
and in the `stock_levels` view."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from typing import Any

import httpx
import psycopg

from commands.base import Context
from domain.identity import Role
from domain.inventory import Stock, stock_id
from infra.bench.load import Connection, LoadResult, percentile
from infra.bench.stack import api_argv, background, scratch_env, serve
from infra.bootstrap import bootstrap
from infra.settings import Settings
from projections.inventory import stock_row

HOT_SKUS = 5
DECIDED = ("Order.Reserved", "Order.Rejected")


class Shop:
    def __init__(self, base: str, env: dict[str, str], skus: list[str], stock: int) -> None:
        self.base, self.skus = base, skus
        settings = Settings.from_env(env)
        chronicle = bootstrap(settings)
        try:
            with httpx.Client(base_url=base, timeout=30) as http:
                manager = self._member(http, "manager")
                chronicle.identity.grant(
                    Context("bench.setup", system_actor="bench"), uuid.UUID(manager[0]), Role.MANAGER
                )
                auth = {"Authorization": f"Bearer {self._login(http, manager[1])}"}
                for i, sku in enumerate(skus):
                    http.post(
                        "/v1/products",
                        json={"sku": sku, "name": f"Hot item {i}", "price_minor": 100 + i, "currency": "EUR"},
                        headers=auth,
                    ).raise_for_status()
                    http.post(f"/v1/inventory/{sku}/receive", json={"quantity": stock}, headers=auth).raise_for_status()
                self.customers = [self._login(http, self._member(http, f"customer{i}")[1]) for i in range(8)]
        finally:
            chronicle.close()

    @staticmethod
    def _member(http: httpx.Client, name: str) -> tuple[str, str]:
        email = f"{name}-{uuid.uuid4().hex[:8]}@example.com"
        r = http.post("/v1/auth/register", json={"email": email, "password": "benchmark password", "name": name})
        r.raise_for_status()
        return r.json()["id"], email

    @staticmethod
    def _login(http: httpx.Client, email: str) -> str:
        r = http.post("/v1/auth/login", json={"email": email, "password": "benchmark password"})
        r.raise_for_status()
        return str(r.json()["access_token"])

    def order_body(self, rng: random.Random) -> bytes:
        lines = rng.sample(self.skus, rng.randint(1, 2))
        return json.dumps({"lines": [{"sku": s, "quantity": rng.randint(1, 3)} for s in lines]}).encode()


async def place_orders(shop: Shop, rate: float, seconds: float, connections: int = 64) -> tuple[LoadResult, list[str]]:
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await Connection.open(shop.base))
    rng = random.Random(11)
    result, placed = LoadResult(0.0), []

    async def one(body: bytes, token: str) -> None:
        conn = await pool.get()
        try:
            started = time.perf_counter()
            status, answer = await conn.request(
                "POST", "/v1/orders", body, {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            )
            result.latencies_ms.append((time.perf_counter() - started) * 1000)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if status == 201:
                placed.append(json.loads(answer)["id"])
        finally:
            pool.put_nowait(conn)

    running: set[asyncio.Task[None]] = set()
    started = time.perf_counter()
    for n in range(int(rate * seconds)):
        delay = started + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        job = asyncio.create_task(one(shop.order_body(rng), shop.customers[n % len(shop.customers)]))
        running.add(job)
        job.add_done_callback(running.discard)
    await asyncio.gather(*running)
    result.seconds = time.perf_counter() - started
    while not pool.empty():
        pool.get_nowait().close()
    return result, placed


def decisions(url: str, order_ids: list[str], timeout: float) -> dict[str, tuple[float, float, str]]:
    """Per order: placed at, decided at (epoch seconds, from the log) and the decision; waits
    until every order is decided or the timeout passes."""
    ids = [uuid.UUID(i) for i in order_ids]
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            rows = conn.execute(
                "SELECT p.stream_id, extract(epoch FROM p.recorded_at), extract(epoch FROM d.recorded_at), d.type"
                " FROM events p JOIN events d ON d.stream_id = p.stream_id AND d.type = ANY(%s)"
                " WHERE p.type = 'Order.Placed' AND p.stream_id = ANY(%s)",
                (list(DECIDED), ids),
            ).fetchall()
            if len(rows) >= len(ids) or time.monotonic() > deadline:
                return {str(r[0]): (float(r[1]), float(r[2]), str(r[3])) for r in rows}
            time.sleep(0.2)


def stock_check(env: dict[str, str], skus: list[str], timeout: float = 60.0) -> dict[str, Any]:
    chronicle = bootstrap(Settings.from_env(env))
    try:
        found: dict[str, Any] = {}
        for sku in skus:
            stock = chronicle.inventory.load(Stock, stock_id(sku), "stock", fresh=True)
            model = (stock.available, stock.reserved, stock.committed, stock.received, stock.adjusted)
            deadline = time.monotonic() + timeout
            while True:
                with chronicle.database.connection() as conn:
                    view = stock_row(conn, sku)
                if (view and tuple(view) == model) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            found[sku] = {
                "available": stock.available,
                "reserved": stock.reserved,
                "committed": stock.committed,
                "received": stock.received,
                "adjustments": stock.adjusted,
                "balanced": stock.available + stock.reserved + stock.committed == stock.received + stock.adjusted
                and stock.available >= 0,
                "view_matches": view is not None and tuple(view) == model,
            }
        return found
    finally:
        chronicle.close()


def bench_orders(settings: Settings, rate: float, seconds: float) -> dict[str, Any]:
    skus = [f"HOT-{i}" for i in range(HOT_SKUS)]
    # Enough stock for about four orders in five: the rest are rejected as the hot set runs out.
    stock = max(1, int(rate * seconds * 3 * 0.8 / HOT_SKUS))  # 3 units per order on average
    with (
        scratch_env(settings) as env,
        serve(api_argv(), env, "/schema/openapi.json") as api,
        background(env, "relay", "projector", "saga"),
    ):
        shop = Shop(api, env, skus, stock)
        url = env["CHRONICLE_DATABASE_URL"]
        idle = []
        for _ in range(10):  # the floor: one order at a time through an idle stack
            _, one = asyncio.run(place_orders(shop, 1000.0, 0.001, connections=1))
            idle += [d - p for p, d, _ in decisions(url, one, 30.0).values()]
        placing, placed = asyncio.run(place_orders(shop, rate, seconds))
        decided = decisions(url, placed, timeout=max(60.0, seconds * 5))
        balance = stock_check(env, skus)
    latencies = [(d - p) * 1000 for p, d, _ in decided.values()]
    first = min((p for p, _, _ in decided.values()), default=0.0)
    last = max((d for _, d, _ in decided.values()), default=0.0)
    idle_p50 = percentile(idle, 50, empty=0.0) * 1000
    p50 = percentile(latencies, 50, empty=0.0)
    return {
        "bench": "orders",
        "target_rate": rate,
        "seconds": seconds,
        "hot_skus": HOT_SKUS,
        "stock_per_sku": stock,
        "placed": len(placed),
        "place_statuses": placing.statuses,
        "place_ms": {"p50": round(placing.percentile(50), 2), "p99": round(placing.percentile(99), 2)},
        "decided": len(decided),
        "undecided": len(placed) - len(decided),
        "reserved": sum(1 for *_, t in decided.values() if t == "Order.Reserved"),
        "rejected": sum(1 for *_, t in decided.values() if t == "Order.Rejected"),
        "completed_per_s": round(len(decided) / max(last - first, 1e-9), 1),
        "completed_vs_target": round(len(decided) / max(last - first, 1e-9) / rate, 3),
        "placed_to_decided_ms": {"p50": round(p50, 2), "p99": round(percentile(latencies, 99, empty=0.0), 2)},
        "idle_floor_ms": {"p50": round(idle_p50, 2)},
        "p50_vs_idle_floor": round(p50 / idle_p50, 2) if idle_p50 else None,
        "stock": balance,
        "stock_balanced": all(s["balanced"] and s["view_matches"] for s in balance.values()),
    }

"""`chronicle bench queries`: query routes against a bare Litestar route returning a constant
Struct, all served by granian with the same workers, in the same run, alternating in rounds.

Each route is served twice: by an API whose in-process cache (infra.views.l1) is off, so every
request reads its view (Redis or PostgreSQL: the row named for the route), and, for the routes
the cache keeps, by an API with the cache on, asked for the same answer again and again (the row
`… L1 hit`). Every row has its `ratio` to the bare constant GET and its `ratio_to_floor`: to the
constant after one Redis read for a Redis route, after one SQL select for a SQL route (and for
"my tasks", which reads both), and to the bare constant GET itself for an L1 hit, which reads no
server at all."""

from __future__ import annotations

import random
from typing import Any

from infra.bench.load import LoadResult, drive
from infra.bench.stack import Prepared, api_argv, background, ceiling_argv, prepare, scratch_env, serve
from infra.settings import Settings


class Get:
    def __init__(self, path: str, headers: dict[str, str]) -> None:
        self.path, self.headers = path, headers

    def __call__(self, rng: random.Random) -> tuple[str, str, bytes, dict[str, str]]:
        return "GET", self.path, b"", self.headers


def seed_catalog(env: dict[str, str], products: int = 200) -> None:
    """Products with stock, written in-process (the catalog routes only read them)."""
    import uuid

    from commands.base import Actor, Context
    from domain.identity import Role
    from infra.bootstrap import bootstrap

    chronicle = bootstrap(Settings.from_env(env))
    ctx = Context("bench.seed", actor=Actor(uuid.uuid4(), frozenset({Role.MANAGER})))
    try:
        for i in range(products):
            chronicle.catalog.create_product(
                ctx, f"ITEM-{i:04d}", f"Catalog item {i}", "for the benchmark", 100 + 7 * i, "EUR"
            )
            chronicle.inventory.receive(ctx, f"ITEM-{i:04d}", 1 + i % 5)
    finally:
        chronicle.close()


def bench_queries(settings: Settings, seconds: float, connections: int = 32, rounds: int = 3) -> dict[str, Any]:
    with (
        scratch_env(settings) as env,
        serve(api_argv(), {**env, "CHRONICLE_L1_CACHE_MB": "0"}, "/schema/openapi.json") as api,
        serve(api_argv(), env, "/schema/openapi.json") as cached,
        serve(ceiling_argv(), env, "/") as ceiling,
        background(env, "relay", "projector"),
    ):
        prepared: Prepared = prepare(api, 300, assign=True)
        seed_catalog(env)
        import time

        import httpx

        deadline = time.monotonic() + 60
        while (
            httpx.get(f"{api}/v1/projects/{prepared.project_id}/tasks?limit=50", headers=prepared.auth)
            .json()
            .get("items", [])
            == []
            or httpx.get(f"{api}/v1/products?q=item+199", headers=prepared.auth).json().get("items", []) == []
            or httpx.get(f"{api}/v1/products/ITEM-0199", headers=prepared.auth).status_code != 200
        ) and time.monotonic() < deadline:
            time.sleep(0.2)
        routes = {
            "ceiling": (ceiling, Get("/constant", {})),
            "constant after one redis read": (ceiling, Get("/constant/after-redis", {})),
            "constant after one sql select": (ceiling, Get("/constant/after-sql", {})),
            "board (redis)": (api, Get(f"/v1/projects/{prepared.project_id}/board", prepared.auth)),
            "my tasks (redis + sql)": (api, Get("/v1/me/tasks?limit=20", prepared.auth)),
            "task list (sql)": (api, Get(f"/v1/projects/{prepared.project_id}/tasks?limit=50&sort=due", prepared.auth)),
            "task (sql)": (api, Get(f"/v1/tasks/{prepared.task_ids[0]}", prepared.auth)),
            "project (sql)": (api, Get(f"/v1/projects/{prepared.project_id}", prepared.auth)),
            "me (sql)": (api, Get("/v1/me", prepared.auth)),
            "product (redis)": (api, Get("/v1/products/ITEM-0042", prepared.auth)),
            "catalog page by price, in stock (redis)": (
                api,
                Get("/v1/products?sort=price&in_stock=true&limit=20", prepared.auth),
            ),
            "catalog text search (sql)": (api, Get("/v1/products?q=item+1&sort=name&limit=20", prepared.auth)),
        }
        for name in CACHED:
            routes[f"{name} L1 hit"] = (cached, routes[name][1])
        results = {name: LoadResult(0.0) for name in routes}
        for base, make in routes.values():
            drive(base, make, connections, 0.5)
        for _ in range(rounds):
            for name, (base, make) in routes.items():
                results[name].merge(drive(base, make, connections, seconds / rounds))
    rate = {name: r.rate() for name, r in results.items()}
    return {
        "bench": "queries",
        "seconds": seconds,
        "connections": connections,
        "routes": {
            name: {
                **r.summary(),
                "ratio": round(rate[name] / rate["ceiling"], 3),
                "ratio_to_floor": round(rate[name] / rate[floor_of(name)], 3),
            }
            for name, r in results.items()
        },
    }


CACHED = [
    "board (redis)",
    "task (sql)",
    "project (sql)",
    "me (sql)",
    "product (redis)",
    "catalog page by price, in stock (redis)",
]
"""The routes whose answers the API's in-process cache keeps (first pages only, for the catalog)."""


def floor_of(name: str) -> str:
    if name.endswith("L1 hit") or name.startswith("constant") or name == "ceiling":
        return "ceiling"
    return "constant after one redis read" if name.endswith("(redis)") else "constant after one sql select"

"""`chronicle bench explorer --events N`: the auditors' explorer pages on a log of N generated events,
served by a real API process, each timed as one request from a signed-in auditor (best of a few
rounds), against the explorer's sign-in page from the same process in the same rounds: a template
behind the same middleware with no database read, the floor any explorer page pays."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any
from urllib.parse import urlencode

import httpx
import psycopg
import redis

from commands.base import Context
from domain.identity import Role
from infra.bench.rebuild import generate
from infra.bench.stack import api_argv, scratch_env, serve
from infra.bootstrap import bootstrap
from infra.settings import Settings

CEILING = "/explorer/login"
PASSWORD = "benchmark password"


def explorer_pages(url: str) -> list[str]:
    """The pages an auditor opens, on whatever log `url` holds: the log's first and last pages, each
    filter alone and combined, a task's stream at its head, at a version and at a time."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT stream_id FROM events WHERE type = 'Task.Created' ORDER BY notification_id LIMIT 1),"
            " (SELECT recorded_at FROM events ORDER BY notification_id"
            "  OFFSET (SELECT count(*) / 2 FROM events) LIMIT 1),"
            " max(notification_id) FROM events"
        ).fetchone()
    if row is None or row[0] is None:
        raise RuntimeError("the log holds no task to show")
    stream, middle, last = row
    at = middle.isoformat()
    return [
        "/explorer/log",
        f"/explorer/log?{urlencode({'cursor': last - 10})}",
        "/explorer/log?type=Task.Reopened",
        "/explorer/log?actor=nobody",
        f"/explorer/log?{urlencode({'stream': stream})}",
        f"/explorer/log?{urlencode({'from': at})}",
        f"/explorer/log?{urlencode({'type': 'Task.Completed', 'from': at, 'to': at})}",
        f"/explorer/streams/{stream}",
        f"/explorer/streams/{stream}?version=3",
        f"/explorer/streams/{stream}?{urlencode({'at': at})}",
        "/explorer/projections",
        "/explorer/integrity",
    ]


def new_auditor(settings: Settings) -> str:
    """Registers an account with the auditor role, in process; returns its email."""
    email = f"bench-auditor-{uuid.uuid4().hex[:8]}@example.com"
    chronicle = bootstrap(settings)
    try:
        user = chronicle.identity.register(Context("bench.explorer"), email, "Bench Auditor", PASSWORD)
        chronicle.identity.grant(Context("bench.explorer", system_actor="bench"), user.id, Role.AUDITOR)
    finally:
        chronicle.close()
    return email


def sign_in(client: httpx.Client, email: str) -> None:
    """Signs `client` in to the explorer through its form, CSRF token and all."""
    form = client.get(CEILING)
    found = re.search(r'name="_csrf_token" value="([^"]+)"', form.text)
    if form.status_code != 200 or found is None:
        raise RuntimeError(f"the sign-in page answered {form.status_code} without a CSRF token")
    signed_in = client.post(
        CEILING,
        data={"_csrf_token": found[1], "email": email, "password": PASSWORD, "next": "/explorer/log"},
        follow_redirects=False,
    )
    if signed_in.status_code != 303:
        raise RuntimeError(f"signing in answered {signed_in.status_code}: {signed_in.text[:300]}")


def timed_get(client: httpx.Client, path: str) -> float:
    started = time.perf_counter()
    response = client.get(path)
    took = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"{path} answered {response.status_code}: {response.text[:300]}")
    return took


def time_pages(client: httpx.Client, pages: list[str], rounds: int) -> dict[str, float]:
    """The best time in ms of each page and of the ceiling, over `rounds` rounds after one untimed
    round (templates compiled, pools warm); each round times them all in turn, so a noisy neighbour
    hits them alike."""
    best = {path: float("inf") for path in [CEILING, *pages]}
    for round_ in range(rounds + 1):
        for path in best:
            took = timed_get(client, path)
            if round_:
                best[path] = min(best[path], took)
    return {path: took * 1000 for path, took in best.items()}


def bench_explorer(settings: Settings, events: int, rounds: int = 5) -> dict[str, Any]:
    with scratch_env(settings) as env:
        try:
            url = env["CHRONICLE_DATABASE_URL"]
            written = generate(url, events)
            email = new_auditor(Settings.from_env(env))
            pages = explorer_pages(url)
            with (
                serve(api_argv(), env, "/schema/openapi.json") as api,
                httpx.Client(base_url=api, timeout=60) as client,
            ):
                sign_in(client, email)
                best = time_pages(client, pages, rounds)
        finally:
            _forget_namespace(settings, env["CHRONICLE_NAMESPACE"])
    ceiling = best.pop(CEILING)
    return {
        "bench": "explorer",
        "events": written,
        "ceiling_ms": round(ceiling, 2),
        "pages": {path: {"ms": round(ms, 2), "ratio_to_ceiling": round(ms / ceiling, 2)} for path, ms in best.items()},
        "slowest_ms": round(max(best.values()), 2),
    }


def _forget_namespace(settings: Settings, namespace: str) -> None:
    client = redis.Redis.from_url(settings.redis_url or "")
    try:
        keys = list(client.scan_iter(f"{namespace}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()

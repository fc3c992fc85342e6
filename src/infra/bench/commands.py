"""`chronicle bench commands`: a command route that loads, decides and appends (task edit), driven
over HTTP by many concurrent connections, against a ceiling served the same way in the same run
(a bare Litestar POST doing one pooled INSERT). Both servers run at once on their own ports; the
load alternates between them in rounds. Everything runs in a scratch database dropped afterwards."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg

from infra.bench.ceiling import TABLE
from infra.bench.load import LoadResult, drive
from infra.migrate import migrate
from infra.scratch import scratch_database
from infra.settings import Settings

SECRET = "bench-" + uuid.uuid4().hex + uuid.uuid4().hex


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


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(argv: list[str], env: dict[str, str], ready_path: str) -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen([*argv, "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv} exited with status {proc.returncode}")
            try:
                httpx.get(base + ready_path, timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{argv} did not start") from None
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _prepare(base: str, tasks: int) -> EditRandomTask:
    with httpx.Client(base_url=base, timeout=30) as http:
        email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
        http.post("/v1/auth/register", json={"email": email, "password": "benchmark password", "name": "Bench"}
                  ).raise_for_status()
        token = http.post("/v1/auth/login", json={"email": email, "password": "benchmark password"}
                          ).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        project = http.post("/v1/projects", json={"name": "Bench"}, headers=auth).json()["id"]
        ids = [http.post(f"/v1/projects/{project}/tasks", json={"title": f"Task {i}"}, headers=auth).json()["id"]
               for i in range(tasks)]
    return EditRandomTask(token, ids)


def bench_commands(settings: Settings, seconds: float, connections: int = 32, workers: int = 1,
                   tasks: int = 500, rounds: int = 3) -> dict[str, Any]:
    with scratch_database(settings.require_database_url(), "chronicle_bench") as url:
        migrate(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(TABLE)
        env = {**os.environ, "CHRONICLE_DATABASE_URL": url, "CHRONICLE_NATS_URL": settings.nats_url or "",
               "CHRONICLE_REDIS_URL": settings.redis_url or "", "CHRONICLE_JWT_SECRET": SECRET,
               "CHRONICLE_NAMESPACE": f"bench_{uuid.uuid4().hex[:8]}", "CHRONICLE_ACCESS_TOKEN_TTL_S": "86400",
               "CHRONICLE_LOG_LEVEL": "WARNING"}
        api_argv = [sys.executable, "-m", "api.cli", "api", "--workers", str(workers)]
        ceiling_argv = [sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "--workers",
                        str(workers), "--no-access-log", "infra.bench.ceiling:create_app"]
        with serve(api_argv, env, "/schema/openapi.json") as api, serve(ceiling_argv, env, "/") as ceiling:
            edit = _prepare(api, tasks)
            drive(api, edit, connections, 1.0)  # warm-up
            drive(ceiling, InsertRow(), connections, 1.0)
            command, bare = LoadResult(0.0), LoadResult(0.0)
            for _ in range(rounds):
                _merge(command, drive(api, edit, connections, seconds / rounds))
                _merge(bare, drive(ceiling, InsertRow(), connections, seconds / rounds))
    return {
        "bench": "commands", "route": "POST /v1/tasks/{id}/edit", "seconds": seconds, "connections": connections,
        "workers": workers, "command": command.summary(), "ceiling": bare.summary(),
        "ratio": round(command.rate() / bare.rate(), 3),
    }


def _merge(into: LoadResult, part: LoadResult) -> None:
    into.seconds += part.seconds
    into.latencies_ms += part.latencies_ms
    for status, n in part.statuses.items():
        into.statuses[status] = into.statuses.get(status, 0) + n

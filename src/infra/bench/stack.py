"""A whole Chronicle stack for a benchmark: a scratch database on the configured server, a fresh
namespace, the API served by granian, and (when asked) the relay and projectors."""

from __future__ import annotations

import base64
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from infra.devstack.scratch import scratch_database
from infra.eventstore.migrate import migrate
from infra.settings import Settings

SECRET = "bench-" + uuid.uuid4().hex + uuid.uuid4().hex


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(argv: list[str], env: dict[str, str], ready_path: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [*argv, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
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
        _stop(proc)


@contextmanager
def background(env: dict[str, str], *commands: str) -> Iterator[None]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "api.cli", command],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for command in commands
    ]
    try:
        yield
    finally:
        for proc in procs:
            _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


BENCH_SEAL_KEY = base64.b64encode(secrets.token_bytes(32)).decode()
"""A seal key for the benchmark's scratch deployment (its seals are dropped with the database)."""

# A benchmark drives one user and one address far past what a real client sends: it raises the
# API's rate limits (and the password-hashing queue) explicitly, and says so.
BENCH_LIMITS = {
    "CHRONICLE_AUTH_RATE_LIMIT_PER_MINUTE": "10000000",
    "CHRONICLE_COMMAND_RATE_LIMIT_PER_SECOND": "10000000",
    "CHRONICLE_PASSWORD_HASH_QUEUE": "100000",
}


@contextmanager
def scratch_env(settings: Settings, **extra: str) -> Iterator[dict[str, str]]:
    print(
        "benchmark: rate limits raised for this run: "
        + ", ".join(f"{k}={v}" for k, v in BENCH_LIMITS.items() if k not in extra),
        file=sys.stderr,  # stdout carries the results, as JSON
        flush=True,
    )
    # A scratch database is made (and migrated) by the owner: the services' login may not.
    with scratch_database(settings.migrate_database_url or settings.require_database_url(), "chronicle_bench") as url:
        migrate(url)
        yield {
            **os.environ,
            "CHRONICLE_DATABASE_URL": url,
            "CHRONICLE_NATS_URL": settings.nats_url or "",
            "CHRONICLE_REDIS_URL": settings.redis_url or "",
            "CHRONICLE_JWT_SECRET": SECRET,
            "CHRONICLE_SEAL_KEY": BENCH_SEAL_KEY,
            "CHRONICLE_NAMESPACE": f"bench_{uuid.uuid4().hex[:8]}",
            "CHRONICLE_ACCESS_TOKEN_TTL_S": "86400",
            "CHRONICLE_LOG_LEVEL": "WARNING",
            **BENCH_LIMITS,
            **extra,
        }


def api_argv(workers: int = 1) -> list[str]:
    return [sys.executable, "-m", "api.cli", "api", "--workers", str(workers)]


def ceiling_argv(workers: int = 1) -> list[str]:
    return [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "asgi",
        "--factory",
        "--workers",
        str(workers),
        "--no-access-log",
        "infra.bench.ceiling:create_app",
    ]


@dataclass
class Prepared:
    token: str
    user_id: str
    project_id: str
    task_ids: list[str]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def prepare(base: str, tasks: int, assign: bool = False) -> Prepared:
    with httpx.Client(base_url=base, timeout=30) as http:
        email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
        user = http.post(
            "/v1/auth/register", json={"email": email, "password": "benchmark password", "name": "Bench"}
        ).json()["id"]
        token = http.post("/v1/auth/login", json={"email": email, "password": "benchmark password"}).json()[
            "access_token"
        ]
        auth = {"Authorization": f"Bearer {token}"}
        project = http.post("/v1/projects", json={"name": "Bench"}, headers=auth).json()["id"]
        body = {"assignee_id": user} if assign else {}
        ids = [
            http.post(f"/v1/projects/{project}/tasks", json={"title": f"Task {i}", **body}, headers=auth).json()["id"]
            for i in range(tasks)
        ]
    return Prepared(token, user, project, ids)

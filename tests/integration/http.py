"""A real `chronicle api` process (granian) for the HTTP tests, and a small client for them."""

from __future__ import annotations

import base64
import os
import secrets
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import IO, Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from infra.settings import Settings
from tests.waiting import eventually

JWT_SECRET = secrets.token_urlsafe(48)
"""Made per test run: no secret is written in the repository, not even a test's."""
SEAL_KEY = base64.b64encode(secrets.token_bytes(32)).decode()
"""The test run's seal key (its 32 bytes, base64), made per run like the JWT secret."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def api_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHRONICLE_")}
    env.update(
        {
            "CHRONICLE_DATABASE_URL": settings.database_url or "",
            "CHRONICLE_NATS_URL": settings.nats_url or "",
            "CHRONICLE_REDIS_URL": settings.redis_url or "",
            "CHRONICLE_NAMESPACE": settings.namespace,
            "CHRONICLE_JWT_SECRET": JWT_SECRET,
            "CHRONICLE_SEAL_KEY": settings.seal_key or SEAL_KEY,
            "CHRONICLE_LOG_LEVEL": "WARNING",
            # The suite registers and logs in hundreds of users from one address, and some tests drive
            # one user hard: the limits are raised here; test_http_limits tests them at small values.
            "CHRONICLE_AUTH_RATE_LIMIT_PER_MINUTE": "1000000",
            "CHRONICLE_COMMAND_RATE_LIMIT_PER_SECOND": "1000000",
            **extra,
        }
    )
    return env


@contextmanager
def running_api(settings: Settings, *args: str, log: IO[bytes] | None = None, **extra_env: str) -> Iterator[str]:
    """`log`: where its output goes (else this process's)."""
    proc, base = _start_api(settings, args, extra_env, log)
    try:
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _start_api(
    settings: Settings, args: tuple[str, ...], extra_env: dict[str, str], log: IO[bytes] | None, attempts: int = 3
) -> tuple[subprocess.Popen[bytes], str]:
    """A started API; on another port if it exits at once (its port was taken after it was chosen)."""
    for attempt in range(1, attempts + 1):
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "api", "--port", str(port), *args],
            env=api_env(settings, **extra_env),
            start_new_session=True,
            stdout=log,
            stderr=log,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            eventually(partial(_answering_or_exited, proc, base), what=f"chronicle api on port {port}", timeout=60)
        except AssertionError:
            proc.kill()
            proc.wait()
            raise
        if proc.poll() is None:
            return proc, base
        assert attempt < attempts, f"chronicle api exited with {proc.returncode}"
    raise AssertionError("unreachable")


def _answering_or_exited(proc: subprocess.Popen[bytes], base: str) -> bool:
    if proc.poll() is not None:
        return True
    try:
        return httpx.get(f"{base}/schema/openapi.json", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class User:
    id: uuid.UUID
    email: str
    password: str
    token: str
    refresh_token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class Api:
    def __init__(self, base: str) -> None:
        self.base = base
        self.http = httpx.Client(base_url=base, timeout=30)

    def post(self, path: str, json: Any = None, user: User | None = None, **headers: str) -> httpx.Response:
        return self.http.post(path, json=json, headers={**(user.auth if user else {}), **_headers(headers)})

    def delete(self, path: str, user: User | None = None, **headers: str) -> httpx.Response:
        return self.http.delete(path, headers={**(user.auth if user else {}), **_headers(headers)})

    def get(self, path: str, user: User | None = None, **headers: str) -> httpx.Response:
        return self.http.get(path, headers={**(user.auth if user else {}), **_headers(headers)})

    def register(self, name: str = "Test User", password: str = "correct horse battery") -> User:
        email = f"{name.split()[0].lower()}-{uuid.uuid4().hex[:10]}@example.com"
        r = self.post("/v1/auth/register", {"email": email, "password": password, "name": name})
        assert r.status_code == 201, r.text
        return self.login(uuid.UUID(r.json()["id"]), email, password)

    def login(self, user_id: uuid.UUID, email: str, password: str) -> User:
        r = self.post("/v1/auth/login", {"email": email, "password": password})
        assert r.status_code == 200, r.text
        body = r.json()
        return User(user_id, email, password, body["access_token"], body["refresh_token"])

    def relogin(self, user: User) -> User:
        return self.login(user.id, user.email, user.password)

    def project(self, owner: User, name: str = "Apollo", *members: User) -> uuid.UUID:
        r = self.post("/v1/projects", {"name": name}, owner)
        assert r.status_code == 201, r.text
        project_id = uuid.UUID(r.json()["id"])
        for member in members:
            r = self.post(f"/v1/projects/{project_id}/members", {"user_id": str(member.id)}, owner)
            assert r.status_code == 200, r.text
        return project_id

    def task(self, user: User, project_id: uuid.UUID, **fields: Any) -> uuid.UUID:
        r = self.post(f"/v1/projects/{project_id}/tasks", {"title": "A task", **fields}, user)
        assert r.status_code == 201, r.text
        return uuid.UUID(r.json()["id"])


def _headers(headers: dict[str, str]) -> dict[str, str]:
    return {k.replace("_", "-"): v for k, v in headers.items()}


def assert_problem(
    r: httpx.Response, status: int, *, field: str | None = None, says: str | None = None
) -> dict[str, Any]:
    assert r.status_code == status, f"{r.status_code} {r.text}"
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers["content-type"]
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["title"] and body["detail"]
    if field is not None:
        assert field in [e["field"] for e in body.get("errors", [])], body
    if says is not None:
        assert says in body["detail"], body
    return body


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, parsed by prometheus-client's own parser. A new connection each
    time, so the workers take turns answering."""
    response = httpx.get(f"{base}/metrics", timeout=10)
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(v for (n, found), v in samples.items() if n == name and labels.items() <= dict(found).items())

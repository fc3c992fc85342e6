"""A small HTTP/1.1 load generator: many keep-alive connections on raw asyncio streams.

A client library (httpx) costs more CPU per request than the server under test on a two-core
machine; this one only writes prepared requests and reads responses by Content-Length, so the
server, not the client, is what the numbers measure. It runs in its own process.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

RequestMaker = Callable[[random.Random], tuple[str, str, bytes, dict[str, str]]]


def percentile(values: list[float], p: float, empty: float = float("nan")) -> float:
    if not values:
        return empty
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


@dataclass
class LoadResult:
    seconds: float
    statuses: dict[int, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    def rate(self) -> float:
        return self.ok / self.seconds

    def percentile(self, p: float) -> float:
        return percentile(self.latencies_ms, p)

    def merge(self, part: LoadResult) -> None:
        """Adds another round of the same load to this one."""
        self.seconds += part.seconds
        self.latencies_ms += part.latencies_ms
        for status, n in part.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + n

    def summary(self) -> dict[str, Any]:
        return {
            "ok_per_s": round(self.rate()),
            "p50_ms": round(self.percentile(50), 2),
            "p99_ms": round(self.percentile(99), 2),
            "statuses": self.statuses,
        }


def _encode(method: str, host: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Connection:
    """One keep-alive HTTP/1.1 connection: a request, then its whole response, in turn."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, base: str) -> Connection:
        parts = urlsplit(base)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, f"{host}:{port}")

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        self.writer.write(_encode(method, self.host, path, body, headers or {}))
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        payload = await self.reader.readexactly(length) if length else b""
        return int(status_line.split()[1]), payload

    def close(self) -> None:
        self.writer.close()


async def _connection(base: str, make: RequestMaker, stop_at: float, result: LoadResult, seed: int) -> None:
    rng = random.Random(seed)
    conn = await Connection.open(base)
    try:
        while time.perf_counter() < stop_at:
            method, path, body, headers = make(rng)
            started = time.perf_counter()
            status, _ = await conn.request(method, path, body, headers)
            result.latencies_ms.append((time.perf_counter() - started) * 1000)
            result.statuses[status] = result.statuses.get(status, 0) + 1
    finally:
        conn.close()


async def _drive(base: str, make: RequestMaker, connections: int, seconds: float) -> LoadResult:
    result = LoadResult(seconds)
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(_connection(base, make, stop_at, result, seed) for seed in range(connections)))
    result.seconds = time.perf_counter() - started
    return result


def _worker(base: str, make: RequestMaker, connections: int, seconds: float, out: Any) -> None:
    out.put(asyncio.run(_drive(base, make, connections, seconds)))


def drive(base: str, make: RequestMaker, connections: int, seconds: float) -> LoadResult:
    """Runs the load in a separate process; `make` must be picklable (a module-level callable)."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(base, make, connections, seconds, out))
    proc.start()
    result: LoadResult = out.get(timeout=seconds + 120)
    proc.join(timeout=30)
    return result

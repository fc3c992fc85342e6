"""Relay and projector processes for tests, and checks that views match the log."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import nats
import psycopg
import redis.asyncio as aioredis

from infra.delivery.projector import register
from infra.delivery.relay import stream_name
from infra.eventstore.recorder import head_position
from infra.settings import Settings
from infra.views.operations import checkpoints as live_checkpoints
from infra.views.rebuild import open_store, replay
from projections import all_projections
from tests.integration.http import api_env
from tests.waiting import eventually


class Processes:
    """`chronicle relay` / `chronicle projector` children that a test can kill and start again."""

    def __init__(self, settings: Settings, **extra_env: str) -> None:
        self.env = api_env(settings, **{"CHRONICLE_LOG_LEVEL": "WARNING", **extra_env})
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> None:
        command = name.split("#")[0]
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "api.cli", command, *args], env=self.env, start_new_session=True
        )

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


def wait_active(settings: Settings, *roles: str, timeout: float = 60.0) -> None:
    """Until a process holds each role's lock in the settings' database: "relay", or "projection
    NAME" (the saga's is "projection order_saga")."""

    def all_held() -> bool:
        with psycopg.connect(settings.database_url or "") as conn:
            rows = conn.execute(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE l.locktype = 'advisory' AND l.granted"
                " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchall()
        held = {str(r[0]).removeprefix("chronicle ").rsplit(" pid=", 1)[0] for r in rows}
        missing = set(roles) - held
        assert not missing, f"no process is active yet for {sorted(missing)}"
        return True

    eventually(all_held, what="a process to hold each role's lock", timeout=timeout)


def all_roles(*, saga: bool = False) -> list[str]:
    """The roles `chronicle relay` and `chronicle projector` (and `chronicle saga`) take."""
    return ["relay", *(f"projection {p.name}" for p in all_projections()), *(["projection order_saga"] if saga else [])]


@contextmanager
def running(settings: Settings, *names: str, **extra_env: str) -> Iterator[Processes]:
    processes = Processes(settings, **extra_env)
    try:
        for name in names:
            processes.start(name)
        yield processes
    finally:
        processes.stop_all()


def checkpoints(url: str, settings: Settings) -> dict[str, int]:
    return asyncio.run(live_checkpoints(dataclasses.replace(settings, database_url=url), list(all_projections())))


def head(url: str) -> int:
    async def read() -> int:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            return await head_position(conn)

    return asyncio.run(read())


def wait_caught_up(settings: Settings, timeout: float = 60.0) -> None:
    url = settings.database_url or ""
    target = head(url)

    def caught_up() -> bool:
        seen = checkpoints(url, settings)
        behind = {name: position for name, position in seen.items() if position < target}
        assert not behind, f"behind: {behind}"
        return True

    eventually(caught_up, what=f"every view to catch up with position {target}", timeout=timeout)


def differences_from_scratch(settings: Settings, scratch_version: int = 900) -> dict[str, list[str]]:
    """Builds every projection again from the log into a scratch version and compares: no event
    missing and none applied twice means no difference."""

    async def compare() -> dict[str, list[str]]:
        url = settings.database_url or ""
        client = aioredis.from_url(settings.redis_url or "")
        found: dict[str, list[str]] = {}
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                for projection in all_projections():
                    version, _, _ = await register(conn, projection)
                    live = await open_store(conn, client, settings.namespace, projection, version)
                    scratch = await open_store(conn, client, settings.namespace, projection, scratch_version)
                    await replay(url, scratch, after=0, until=await live.checkpoint())
                    found[projection.name] = (await live.fingerprint()).differences(await scratch.fingerprint())
                    await scratch.drop()
        finally:
            await client.aclose()
        return found

    return asyncio.run(compare())


def env_without_servers() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CHRONICLE_")}


async def _stream(settings: Settings) -> tuple[str | None, list[str]]:
    nc = await nats.connect(servers=(settings.nats_url or "").split(","))
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream_name(settings.namespace))
        ids = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream_name(settings.namespace), seq)
            if not (msg.headers or {})["Nats-Msg-Id"].startswith("mark-"):  # partitions' marks
                ids.append((msg.headers or {})["Nats-Msg-Id"])
        return (info.cluster.leader if info.cluster else None), ids
    finally:
        await nc.close()


def stream_contents(settings: Settings) -> tuple[str | None, list[str]]:
    """The event stream's leader node (in a cluster), and the event ids it holds, in order."""
    return asyncio.run(_stream(settings))


def assert_stream_is_the_log(settings: Settings) -> None:
    """The stream holds every event of the log, in the log's order, once each."""
    _, published = stream_contents(settings)
    with psycopg.connect(settings.database_url or "") as conn:
        logged = [str(r[0]) for r in conn.execute("SELECT event_id FROM events ORDER BY notification_id")]
    assert len(published) == len(set(published)), "an event was published twice"
    assert published == logged, "the stream is not the log, in order, once each"

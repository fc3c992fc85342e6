"""The integrity page: the latest `verify` run (when, by whom, what it found), and a button that runs
it again in the background while the page shows its progress.

Runs and their results live in Redis under the deployment's namespace, so every API process shows
the same ones and only one run goes at a time: a key taken with SET NX, which the run renews every
`RENEW_S` while it goes (so it expires `LOCK_S` after the process running it dies, however long a
run takes), and which a run changes or deletes only while it still holds its own value there (a
compare-and-set script), never another run's.

A run that fails is kept as failed, with an error id; what failed (which may name servers or
accounts) goes only to the log, under that id."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.response import Redirect, Template

from api.audit import full_verify, record_access
from api.auth import requires_role
from api.explorer.common import HEADERS, page
from api.explorer.session import READERS
from api.runtime import RUNTIME, Runtime
from infra.eventstore.audit import log_size
from infra.eventstore.verify import Verification

log = logging.getLogger(__name__)
LOCK_S = 60
RENEW_S = 15

SWAP = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then return redis.call('DEL', KEYS[1]) end
redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
return 1
"""
"""KEYS[1] := ARGV[2] for ARGV[3] seconds (deleted when ARGV[2] is empty), only if it holds ARGV[1]."""


class Run(msgspec.Struct, omit_defaults=True):
    started_at: datetime
    by: str
    events: int | None = None  # the log's last position when the run started: what it has to check
    token: str = ""  # tells this run's lock from another's
    finished_at: datetime | None = None
    result: Verification | None = None
    error: str | None = None


class Progress(msgspec.Struct):
    running: bool
    elapsed_s: float | None = None
    events: int | None = None


def _keys(runtime: Runtime) -> tuple[str, str]:
    prefix = f"{runtime.settings.namespace}:explorer:verify"
    return f"{prefix}:running", f"{prefix}:last"


async def _get(runtime: Runtime, key: str) -> Run | None:
    raw = await runtime.redis.get(key)
    return msgspec.json.decode(raw, type=Run) if raw else None


async def _swap(runtime: Runtime, key: str, held: bytes, new: bytes | None) -> bool:
    """Replaces (or, with None, deletes) `key` if it still holds `held`: this run's own lock."""
    done = await runtime.script(SWAP)(keys=[key], args=[held, new or b"", LOCK_S])
    return bool(done)


async def _run(runtime: Runtime, run: Run, held: bytes) -> None:
    """Runs verify, renewing its lock while it goes, and keeps its result as the latest; a failure is
    kept as the result (with an error id) and logged under that id."""
    running, last = _keys(runtime)
    try:
        async with runtime.views.connection() as conn:
            run.events = await log_size(conn)
        counted = msgspec.json.encode(run)
        if await _swap(runtime, running, held, counted):
            held = counted
        work = asyncio.ensure_future(full_verify(runtime))
        while not work.done():
            await asyncio.wait([work], timeout=RENEW_S)
            if not work.done() and not await _swap(runtime, running, held, held):
                log.warning("explorer: verify run %s lost its lock; another run may start", run.token)
        run.result = work.result()
    except Exception:
        error_id = uuid.uuid4()
        log.exception("explorer: verify run %s failed (error id %s)", run.token, error_id)
        run.error = f"The run could not finish; its cause is in the server's log under error id {error_id}."
    finally:
        run.finished_at = datetime.now(UTC)
        await runtime.redis.set(last, msgspec.json.encode(run))
        await _swap(runtime, running, held, None)


class ExplorerIntegrity(Controller):
    path = "/explorer/integrity"
    guards = [requires_role(*READERS)]
    dependencies = RUNTIME

    @get("/", name="explorer:integrity")
    async def integrity(self, request: Request[Any, Any, Any], runtime: Runtime) -> Template:
        await record_access(request, runtime)
        running, last = _keys(runtime)
        return page("integrity.html", running=await _get(runtime, running), last=await _get(runtime, last))

    @post("/run", status_code=303)
    async def run(self, request: Request[Any, Any, Any], runtime: Runtime) -> Redirect:
        """Starts a run unless one is going; either way, back to the page, which shows it."""
        await record_access(request, runtime)
        running, _ = _keys(runtime)
        run = Run(datetime.now(UTC), str(request.user.user_id), token=uuid.uuid4().hex)
        held = msgspec.json.encode(run)
        if await runtime.redis.set(running, held, nx=True, ex=LOCK_S):
            task = asyncio.create_task(_run(runtime, run, held))
            tasks: set[asyncio.Task[None]] = request.app.state.setdefault("explorer_verify_tasks", set())
            tasks.add(task)  # a reference, so the task is not collected while it runs
            task.add_done_callback(tasks.discard)
        return Redirect("/explorer/integrity", status_code=303, headers=HEADERS)

    @get("/progress", name="explorer:integrity-progress")
    async def progress(self, runtime: Runtime) -> Progress:
        """Polled by the page while a run goes (not recorded: the run itself was)."""
        run = await _get(runtime, _keys(runtime)[0])
        if run is None:
            return Progress(False)
        return Progress(True, round((datetime.now(UTC) - run.started_at).total_seconds(), 1), run.events)

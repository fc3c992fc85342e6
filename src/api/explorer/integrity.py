"""The integrity page: the latest `verify` run (when, by whom, what it found), and a button that runs
it again in the background while the page shows its progress.

Runs and their results live in Redis under the deployment's namespace, so every API process shows
the same ones and only one run goes at a time (a key taken with SET NX; it expires after
`RUN_LIMIT_S` should the process running it die)."""

from __future__ import annotations

import asyncio
import logging
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
from infra.eventstore.verify import Verification

log = logging.getLogger(__name__)
RUN_LIMIT_S = 3600


class Run(msgspec.Struct, omit_defaults=True):
    started_at: datetime
    by: str
    events: int  # events in the log when the run started: what it has to check (and a few more)
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


async def _run(runtime: Runtime, run: Run) -> None:
    """Runs verify and keeps its result as the latest; a failure is kept (and logged) as the result."""
    running, last = _keys(runtime)
    try:
        run.result = await full_verify(runtime)
    except Exception as e:
        log.exception("explorer: verify failed")
        run.error = f"{type(e).__name__}: {e}"[:500]
    finally:
        run.finished_at = datetime.now(UTC)
        await runtime.redis.set(last, msgspec.json.encode(run))
        await runtime.redis.delete(running)


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
        async with runtime.views.connection() as conn:
            row = await (await conn.execute("SELECT count(*) FROM events")).fetchone()
        run = Run(datetime.now(UTC), str(request.user.user_id), int(row[0]) if row else 0)
        if await runtime.redis.set(running, msgspec.json.encode(run), nx=True, ex=RUN_LIMIT_S):
            task = asyncio.create_task(_run(runtime, run))
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

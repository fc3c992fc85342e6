"""The threads of the API's write side (api.threads): results, errors, the caller's context, and
cancellation, as `run_in_executor` gave them."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Iterator

import pytest

from api.threads import CommandThreads

who: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


@pytest.fixture
def threads() -> Iterator[CommandThreads]:
    pool = CommandThreads(2, "test-command")
    yield pool
    pool.shutdown()


def test_a_job_returns_its_result_in_the_callers_context(threads: CommandThreads) -> None:
    async def call() -> tuple[str, str]:
        who.set("caller")
        return await threads.run(lambda suffix: (who.get() + suffix, threading.current_thread().name), "!")

    value, thread = asyncio.run(call())
    assert value == "caller!" and thread.startswith("test-command")


def test_a_jobs_error_reaches_its_caller(threads: CommandThreads) -> None:
    def fail() -> None:
        raise LookupError("nothing there")

    with pytest.raises(LookupError, match="nothing there"):
        asyncio.run(threads.run(fail))


def test_a_job_cancelled_before_a_thread_took_it_never_runs(threads: CommandThreads) -> None:
    release = threading.Event()
    ran: list[str] = []

    async def scenario() -> None:
        busy = [asyncio.ensure_future(threads.run(release.wait, 10)) for _ in range(2)]  # both threads
        queued = asyncio.ensure_future(threads.run(ran.append, "queued"))
        await asyncio.sleep(0)  # every job is on the queue
        queued.cancel()
        release.set()
        await asyncio.gather(*busy)
        assert await threads.run(ran.append, "after") is None  # runs after the cancelled one was passed
        assert queued.cancelled()

    asyncio.run(scenario())
    assert ran == ["after"]


def test_shutting_down_finishes_the_jobs_already_queued() -> None:
    pool = CommandThreads(1, "test-command")
    gate = threading.Event()
    done: list[int] = []

    async def scenario() -> None:
        first = asyncio.ensure_future(pool.run(gate.wait, 10))
        rest = [asyncio.ensure_future(pool.run(done.append, i)) for i in range(3)]
        await asyncio.sleep(0)  # every job is on the queue, the thread on the first
        stopping = threading.Thread(target=pool.shutdown)
        stopping.start()  # asks the thread to end after what is queued
        gate.set()
        await asyncio.gather(first, *rest)
        stopping.join(timeout=10)
        assert not stopping.is_alive()

    asyncio.run(scenario())
    assert done == [0, 1, 2]

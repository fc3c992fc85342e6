"""Waiting for things, not for time: `eventually(check, what=...)` polls until the thing is so.

The pipeline is asynchronous (relay, projectors, the saga, processes starting), so a test asks
"is it there yet?" until it is, within a bound, instead of sleeping a guessed while. When the
bound passes, the failure names what was awaited and the last thing seen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(check: Callable[[], T], *, what: str, timeout: float = 30.0, every: float = 0.2) -> T:
    """Calls `check` until it returns something truthy, and returns that. A falsy result or an
    AssertionError means "not yet"; any other exception is a real failure and propagates at once.
    Polls soon at first (10 ms), then less often (up to every `every` seconds)."""
    deadline = time.monotonic() + timeout
    pause = min(0.01, every)
    while True:
        try:
            result = check()
        except AssertionError as e:
            last = f"last check failed: {e}" if str(e) else "last check failed an assertion"
            failure: AssertionError | None = e
        else:
            if result:
                return result
            last, failure = f"last check gave {result!r}", None
        if time.monotonic() >= deadline:
            raise AssertionError(f"gave up after {timeout:g}s waiting for {what}; {last}") from failure
        time.sleep(pause)
        pause = min(pause * 2, every)

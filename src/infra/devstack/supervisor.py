"""Runs Chronicle's processes (API, relay, projectors, …) as children, restarts any that die, and
stops them all, newest first, when told to."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)


class Stoppable(Protocol):
    def wait(self, timeout: float | None = None) -> bool: ...


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)


class Supervisor:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.children: list[Child] = []

    def add(self, name: str, *args: str) -> None:
        """A Chronicle CLI subcommand, run with this interpreter."""
        self.children.append(Child(name, [sys.executable, "-m", "api.cli", *args]))

    def start(self, child: Child) -> None:
        child.proc = subprocess.Popen(child.argv, env=self.env, start_new_session=True)
        child.started_at = time.monotonic()
        log.info("started %s (pid %d)", child.name, child.proc.pid)

    def start_all(self) -> None:
        for child in self.children:
            self.start(child)

    def watch(self, stop: Stoppable, poll: float = 0.5) -> None:
        """Restarts children that exit, with a growing pause for one that keeps failing."""
        while not stop.wait(poll):
            for child in self.children:
                if child.proc is None or child.proc.poll() is None:
                    continue
                now = time.monotonic()
                if child.next_start == 0.0:
                    lived = now - child.started_at
                    child.restarts = 0 if lived > 30 else child.restarts + 1
                    pause = min(30.0, 0.5 * 2**child.restarts)
                    log.warning(
                        "%s exited with status %s; restarting in %.1fs", child.name, child.proc.returncode, pause
                    )
                    child.next_start = now + pause
                elif now >= child.next_start:
                    child.next_start = 0.0
                    self.start(child)

    def stop_all(self, timeout: float = 20.0) -> None:
        for child in reversed(self.children):
            if child.proc is not None and child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in reversed(self.children):
            if child.proc is None:
                continue
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs; killing it", child.name, timeout)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.proc.pid, signal.SIGKILL)
                child.proc.wait()

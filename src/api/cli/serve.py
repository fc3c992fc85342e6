"""Running Chronicle: `dev`, `api`, `relay`, `projector`, `saga`, `migrate`, `users`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import replace
from typing import Any

from api.cli.common import (
    Add,
    CliError,
    check_schema,
    operator_name,
    seal_key,
    server_env,
    settings_from,
    stop_on_signals,
    until_signalled,
    wait_http,
    with_dev_secret,
    with_servers,
)
from infra.devstack.embedded import EmbeddedServers
from infra.settings import Settings

log = logging.getLogger("chronicle")


def register(sub: Any, add: Add) -> None:
    dev = add(sub, "dev", help="run the whole stack, starting embedded servers if none are configured")
    dev.add_argument("--port", type=int, help="API port (default 8000 or CHRONICLE_PORT)")
    dev.add_argument(
        "--metrics-port",
        type=int,
        metavar="N",
        help="serve the relay's metrics on N, the projector's on N+1, the saga's on N+2",
    )
    dev.add_argument(
        "--servers-only", action="store_true", help="start only the servers and print their URLs as CHRONICLE_…=… lines"
    )
    dev.set_defaults(run=cmd_dev)

    api = add(sub, "api", help="serve the HTTP API against configured servers")
    api.add_argument("--workers", type=int, default=1)
    api.add_argument("--port", type=int)
    api.add_argument("--host")
    api.set_defaults(run=cmd_api)

    partitions_help = "JetStream partitions P (default 1 or CHRONICLE_PARTITIONS); relay and projectors must agree"
    relay = add(sub, "relay", help="publish the event log to NATS JetStream (one active; others stand by)")
    relay.add_argument("--partitions", type=int, help=partitions_help)
    relay.add_argument("--metrics-port", type=int, metavar="N", help="serve Prometheus metrics on port N")
    relay.set_defaults(run=cmd_relay)

    projector = add(sub, "projector", help="build read models from JetStream (all projections by default)")
    projector.add_argument("names", nargs="*", metavar="NAME")
    projector.add_argument("--partitions", type=int, help=partitions_help)
    projector.add_argument("--metrics-port", type=int, metavar="N", help="serve Prometheus metrics on port N")
    projector.set_defaults(run=cmd_projector)

    saga = add(sub, "saga", help="run the order saga: reserve, reject, release, commit stock; expire unpaid orders")
    saga.add_argument("--metrics-port", type=int, metavar="N", help="serve Prometheus metrics on port N")
    saga.set_defaults(run=cmd_saga)

    migrate = add(sub, "migrate", help="bring the database schema up to date")
    migrate.set_defaults(run=cmd_migrate)

    users = sub.add_parser("users", help="manage users").add_subparsers(required=True, metavar="ACTION")
    for action in ("grant", "revoke"):
        p = add(users, action, help=f"{action} a role (member, manager, auditor, admin)")
        p.add_argument("email")
        p.add_argument("role")
        p.set_defaults(run=cmd_users, action=action)
    erase = add(users, "erase", help="erase a user's personal data (crypto-shredding; the events stay)")
    erase.add_argument("email")
    erase.set_defaults(run=cmd_users_erase)


def cmd_dev(args: argparse.Namespace) -> None:
    from infra.devstack.supervisor import Supervisor
    from infra.eventstore.migrate import service_url

    settings = settings_from(args)
    stop = stop_on_signals()
    servers: EmbeddedServers | None = None
    try:
        if not settings.servers_configured:
            servers = EmbeddedServers(settings.data_dir)
            urls = servers.start()
            # The services connect as the service role (migration 0009); migrations run as the owner.
            settings = settings.with_servers(service_url(urls.database_url), urls.nats_url, urls.redis_url)
            settings = replace(settings, migrate_database_url=urls.database_url)
            log.info("embedded servers running under %s", settings.data_dir.resolve())
        settings = with_dev_secret(settings)
        applied = _migrate(settings)
        if applied:
            log.info("applied migrations: %s", ", ".join(f"{m.version:04d}_{m.name}" for m in applied))
        if args.servers_only:
            # The owner's URL too: `chronicle migrate` and the benchmarks' scratch databases need it.
            shown = (
                "CHRONICLE_DATABASE_URL",
                "CHRONICLE_MIGRATE_DATABASE_URL",
                "CHRONICLE_NATS_URL",
                "CHRONICLE_REDIS_URL",
            )
            for key, value in {
                **server_env(settings),
                "CHRONICLE_MIGRATE_DATABASE_URL": settings.migrate_database_url or "",
            }.items():
                if key in shown and value:
                    print(f"{key}={value}", flush=True)
            print("# servers running; Ctrl-C stops them", flush=True)
            stop.wait()
            return
        supervisor = Supervisor(server_env(settings))
        supervisor.add("api", "api", "--port", str(settings.port), "--host", settings.host)
        metrics_ports = {}
        for offset, role in enumerate(("relay", "projector", "saga")):
            extra = []
            if args.metrics_port is not None:
                metrics_ports[role] = args.metrics_port + offset
                extra = ["--metrics-port", str(args.metrics_port + offset)]
            supervisor.add(role, role, *extra)
        supervisor.start_all()
        try:
            base = f"http://{settings.host}:{settings.port}"
            if wait_http(f"{base}/schema/openapi.json", stop):
                print(
                    f"Chronicle API  {base}/v1\nAPI docs       {base}/schema\nExplorer       {base}/explorer\n"
                    f"Metrics        {base}/metrics",
                    flush=True,
                )
                for role, port in metrics_ports.items():
                    print(f"{role + ' metrics':<15}http://127.0.0.1:{port}/metrics", flush=True)
                print("Ctrl-C stops everything.", flush=True)
            supervisor.watch(stop)
        finally:
            supervisor.stop_all()
    finally:
        if servers is not None:
            servers.stop()
            log.info("embedded servers stopped")


def cmd_api(args: argparse.Namespace) -> None:
    if not settings_from(args).metrics:
        _serve_api(args)
        return
    folder = multiprocess_metrics()
    try:
        _serve_api(args)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def multiprocess_metrics() -> str:
    """Points prometheus-client's multiprocess mode at a fresh folder that the granian workers
    (forked from here) inherit, so `GET /metrics` on any worker sums every worker's values. It
    must happen before prometheus-client is imported in this process."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before its multiprocess folder was set")
    folder = tempfile.mkdtemp(prefix="chronicle-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    return folder


def _serve_api(args: argparse.Namespace) -> None:
    from granian.constants import Interfaces
    from granian.server import Server

    configured = settings_from(args)
    settings = with_servers(configured)
    if not configured.servers_configured:
        settings = with_dev_secret(settings)  # joining a running `chronicle dev`
    settings.require_jwt_secret()
    os.environ.update(server_env(settings))  # the workers build their settings from the environment
    check_schema(settings)
    Server(
        "api.app:create_app",
        factory=True,
        interface=Interfaces.ASGI,
        address=settings.host,
        port=settings.port,
        workers=max(1, args.workers),
        log_access=False,
    ).serve()


def cmd_relay(args: argparse.Namespace) -> None:
    from infra.delivery.relay import Relay
    from infra.observe import metrics

    configured = settings_from(args)
    settings = with_servers(configured)
    if not configured.servers_configured:
        settings = with_dev_secret(settings)  # joining a running `chronicle dev`: its seal key
    check_schema(settings)
    metrics.serve(args.metrics_port, "relay")
    seal_key(settings)  # refuse to start without one
    asyncio.run(until_signalled(Relay(settings).run))


def cmd_saga(args: argparse.Namespace) -> None:
    from infra.delivery.saga import run_saga
    from infra.observe import metrics

    settings = with_servers(settings_from(args))
    check_schema(settings)
    metrics.serve(args.metrics_port, "saga")
    asyncio.run(until_signalled(lambda stop: run_saga(settings, stop)))


def cmd_projector(args: argparse.Namespace) -> None:
    from infra.delivery.projector import run_projections
    from infra.observe import metrics
    from projections import all_projections

    settings = with_servers(settings_from(args))
    check_schema(settings)
    known = {p.name: p for p in all_projections()}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        raise CliError(f"unknown projection(s) {', '.join(unknown)}; known: {', '.join(known)}")
    chosen = [known[n] for n in args.names] if args.names else list(known.values())
    metrics.serve(args.metrics_port, "projector")
    asyncio.run(until_signalled(lambda stop: run_projections(settings, chosen, stop)))


def _migrate(settings: Settings) -> list[Any]:
    """As CHRONICLE_MIGRATE_DATABASE_URL (the owner) when set, making the login of
    CHRONICLE_DATABASE_URL a member of the service role; else as CHRONICLE_DATABASE_URL."""
    from infra.eventstore.migrate import migrate

    url = settings.require_database_url()
    if settings.migrate_database_url and settings.migrate_database_url != url:
        return migrate(settings.migrate_database_url, service=url)
    return migrate(url)


def cmd_migrate(args: argparse.Namespace) -> None:
    settings = with_servers(settings_from(args))
    applied = _migrate(settings)
    print("applied: " + ", ".join(f"{m.version:04d}_{m.name}" for m in applied) if applied else "schema is up to date")


def cmd_users_erase(args: argparse.Namespace) -> None:
    from commands.base import Context
    from domain.errors import DomainError
    from infra.bootstrap import bootstrap

    chronicle = bootstrap(with_servers(settings_from(args)))
    try:
        user = chronicle.identity.find_by_email(args.email)
        if user is None:
            raise CliError(f"no user registered with email {args.email}")
        try:
            chronicle.identity.erase(Context(command="users.erase", system_actor=operator_name()), user.id)
        except DomainError as e:
            raise CliError(e.reason) from None
        print(f"erased user {user.id}")
    finally:
        chronicle.close()


def cmd_users(args: argparse.Namespace) -> None:
    from redis.exceptions import RedisError

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
        ctx = Context(command=f"users.{args.action}", system_actor=operator_name())
        action = chronicle.identity.grant if args.action == "grant" else chronicle.identity.revoke
        try:
            action(ctx, user.id, role)
        except DomainError as e:
            raise CliError(e.reason) from None
        except RedisError as e:  # it must reach every API's access check (see infra.sessions)
            raise CliError(f"Redis did not answer, so nothing was changed: {e}") from None
        print(f"{args.action}ed {role.value} {'to' if args.action == 'grant' else 'from'} {user.email} ({user.id})")
    finally:
        chronicle.close()

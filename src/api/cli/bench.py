"""`chronicle bench`: benchmarks that print JSON, each with a ceiling measured in the same run."""

from __future__ import annotations

import argparse
import json
from typing import Any

from api.cli.common import Add, settings_from, with_servers


def register(sub: Any, add: Add) -> None:
    bench = sub.add_parser("bench", help="benchmarks that print JSON").add_subparsers(required=True, metavar="NAME")
    appends = add(bench, "appends", help="event store appends vs raw INSERTs vs the stock recorder")
    appends.add_argument("--writers", type=int, default=32)
    appends.add_argument("--seconds", type=float, default=10.0)
    appends.set_defaults(run=cmd_bench_appends)
    commands = add(bench, "commands", help="a command route over HTTP vs a bare INSERT route")
    commands.add_argument("--seconds", type=float, default=10.0)
    commands.add_argument("--connections", type=int, default=32)
    commands.add_argument("--workers", type=int, default=1)
    commands.add_argument(
        "--trace-sample", type=float, default=1.0, help="share of requests traced in the observed run (default all)"
    )
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
    orders = add(bench, "orders", help="orders at a steady rate through the saga: throughput, latency, stock check")
    orders.add_argument("--rate", type=float, default=100.0)
    orders.add_argument("--seconds", type=float, default=10.0)
    orders.set_defaults(run=cmd_bench_orders)
    pipeline = add(bench, "pipeline", help="write side alone vs read side alone (relay, JetStream, every projection)")
    pipeline.add_argument("--events", type=int, default=20_000)
    pipeline.set_defaults(run=cmd_bench_pipeline)
    explorer = add(bench, "explorer", help="the explorer's pages on N generated events vs its sign-in page")
    explorer.add_argument("--events", type=int, default=100_000)
    explorer.set_defaults(run=cmd_bench_explorer)


def cmd_bench_appends(args: argparse.Namespace) -> None:
    from infra.bench.appends import bench_appends

    settings = with_servers(settings_from(args))
    print(json.dumps(bench_appends(settings.require_database_url(), args.writers, args.seconds)))


def cmd_bench_commands(args: argparse.Namespace) -> None:
    from infra.bench.commands import bench_commands

    settings = with_servers(settings_from(args))
    print(
        json.dumps(
            bench_commands(settings, args.seconds, args.connections, args.workers, trace_sample=args.trace_sample)
        )
    )


def cmd_bench_lag(args: argparse.Namespace) -> None:
    from infra.bench.lag import bench_lag

    print(json.dumps(bench_lag(with_servers(settings_from(args)), args.rate, args.seconds)))


def cmd_bench_queries(args: argparse.Namespace) -> None:
    from infra.bench.queries import bench_queries

    print(json.dumps(bench_queries(with_servers(settings_from(args)), args.seconds, args.connections)))


def cmd_bench_rebuild(args: argparse.Namespace) -> None:
    from infra.bench.rebuild import bench_rebuild

    print(json.dumps(bench_rebuild(with_servers(settings_from(args)), args.events)))


def cmd_bench_orders(args: argparse.Namespace) -> None:
    from infra.bench.orders import bench_orders

    print(json.dumps(bench_orders(with_servers(settings_from(args)), args.rate, args.seconds)))


def cmd_bench_pipeline(args: argparse.Namespace) -> None:
    from infra.bench.pipeline import bench_pipeline

    print(json.dumps(bench_pipeline(with_servers(settings_from(args)), args.events)))


def cmd_bench_explorer(args: argparse.Namespace) -> None:
    from infra.bench.explorer import bench_explorer

    print(json.dumps(bench_explorer(with_servers(settings_from(args)), args.events)))

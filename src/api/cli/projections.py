"""`chronicle projections`: see, rebuild and repair projections."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from api.cli.common import Add, CliError, check_schema, operator_name, settings_from, with_servers


def register(sub: Any, add: Add) -> None:
    projections = add(sub, "projections", help="see, rebuild and repair projections").add_subparsers(
        required=True, metavar="ACTION"
    )
    add(projections, "list", help="every projection: kind, version, the events it handles").set_defaults(
        run=cmd_projections_list
    )
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


def known_projections() -> list[Any]:
    """The projections, and the order saga: a process with a position that can be parked, retried
    and skipped like a projection's (but never rebuilt or reset)."""
    from infra.delivery.saga import OrderSagaProcess
    from projections import all_projections

    return [*all_projections(), OrderSagaProcess()]


def projection_named(name: str) -> Any:
    known = {p.name: p for p in known_projections()}
    if name not in known:
        raise CliError(f"unknown projection {name!r}; known: {', '.join(known)}")
    return known[name]


def cmd_projections_list(args: argparse.Namespace) -> None:
    for p in known_projections():
        print(f"{p.name:16} {p.kind:6} v{p.version}  {p.description}")
        print(f"{'':16} handles: {', '.join(sorted(p.handles))}")


def cmd_projections_status(args: argparse.Namespace) -> None:
    from infra.views.operations import statuses

    settings = with_servers(settings_from(args))
    check_schema(settings)
    rows = asyncio.run(statuses(settings, known_projections()))
    if args.json:
        import msgspec

        print(msgspec.json.encode(rows).decode())
        return
    print(f"{'PROJECTION':16} {'KIND':6} {'VER':>4} {'STATE':11} {'CHECKPOINT':>20} {'LAG':>8} {'LAG S':>8}  OWNER")
    for r in rows:
        print(
            f"{r.name:16} {r.kind:6} {r.version:>4} {r.state:11} {r.checkpoint:>20} {r.lag_events:>8}"
            f" {r.lag_seconds:>8.1f}  {r.owner or '-'}" + (f"  parked: {r.error}" if r.error else "")
        )
        for p in r.partitions:
            part = f"  [{p.part}/{len(r.partitions)}]"
            print(
                f"{part:16} {'':6} {'':>4} {'':11} {p.checkpoint:>20} {p.lag_events:>8}"
                f" {p.lag_seconds:>8.1f}  {p.owner or '-'}"
            )


def cmd_projections_rebuild(args: argparse.Namespace) -> None:
    from infra.views.operations import OperationRefused, rebuild

    if bool(args.all) == bool(args.name):
        raise CliError("name one projection, or pass --all")
    settings = with_servers(settings_from(args))
    check_schema(settings)
    chosen = [p for p in known_projections() if p.kind != "process"] if args.all else [projection_named(args.name)]
    for projection in chosen:
        bar = ProgressBar(projection.name)
        try:
            report = asyncio.run(
                rebuild(
                    settings,
                    projection,
                    switch=not args.no_switch,
                    force=args.force,
                    progress=bar.update,
                    operator=operator_name(),
                )
            )
        except OperationRefused as e:
            raise CliError(str(e)) from None
        bar.done()
        print(
            f"{projection.name}: v{report.new_version} built from {report.events} events in "
            f"{report.seconds:.1f}s ({report.rate:,.0f} events/s); the live view paused for"
            f" {report.paused_seconds:.2f}s to compare and switch"
        )
        for difference in report.differences:
            print(f"  differs from v{report.live_version}: {difference}")
        if report.switched:
            print(f"  switched: queries now read v{report.new_version}; v{report.live_version} dropped")
        elif args.no_switch:
            print(f"  not switched (--no-switch); v{report.new_version} dropped")
        else:
            print(f"  not switched: the versions differ (pass --force to switch anyway); v{report.new_version} dropped")


def cmd_projections_reset(args: argparse.Namespace) -> None:
    from infra.views.operations import OperationRefused, reset

    projection = projection_named(args.name)
    if not args.yes:
        answer = input(f"Drop the view of {projection.name} and rebuild it from the start? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            raise CliError("not reset")
    settings = with_servers(settings_from(args))
    try:
        asyncio.run(reset(settings, projection, operator=operator_name()))
    except OperationRefused as e:
        raise CliError(str(e)) from None
    print(f"{projection.name}: reset; the projector rebuilds it from the start of the log")


def cmd_projections_retry(args: argparse.Namespace) -> None:
    from infra.views.operations import OperationRefused, retry

    settings = with_servers(settings_from(args))
    try:
        position = asyncio.run(retry(settings, projection_named(args.name), operator=operator_name()))
    except OperationRefused as e:
        raise CliError(str(e)) from None
    print(f"{args.name}: retrying from position {position}")


def cmd_projections_skip(args: argparse.Namespace) -> None:
    from infra.views.operations import OperationRefused, skip

    settings = with_servers(settings_from(args))
    try:
        position = asyncio.run(skip(settings, projection_named(args.name), args.event, operator=operator_name()))
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
        line = (
            f"{self.name} [{'#' * filled}{'.' * (width - filled)}] {done:6.1%}  {applied:,} events"
            f"  {applied / elapsed:,.0f}/s  ETA {eta:,.0f}s"
        )
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.tty and self.last_draw:
            print(file=sys.stderr)

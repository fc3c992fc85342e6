"""`chronicle audit`: the auditors' view of history, straight from the store."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from api.cli.common import (
    Add,
    CliError,
    check_schema,
    operator_name,
    print_json,
    seal_key,
    settings_from,
    with_dev_secret,
    with_servers,
)
from infra.settings import Settings


def register(sub: Any, add: Add) -> None:
    auditing = add(sub, "audit", help="the auditors' view of history (no server needed)").add_subparsers(
        required=True, metavar="ACTION"
    )

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
    audit_verify = add(
        auditing, "verify", help="recompute every event hash and seal, check signatures and the external heads"
    )
    audit_verify.add_argument("--against", type=argparse.FileType("rb"), help="a head.json kept by `audit anchor`")
    audit_verify.set_defaults(run=cmd_audit_verify)
    audit_anchor = add(auditing, "anchor", help="print the newest signed seal head (keep it: `> head.json`)")
    audit_anchor.set_defaults(run=cmd_audit_anchor)


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

    configured = settings_from(args)
    settings = with_servers(configured)
    if not configured.servers_configured:
        settings = with_dev_secret(settings)  # the seal key of a running `chronicle dev`
    check_schema(settings)
    chronicle = bootstrap(settings)
    chronicle.audit.record_access(
        Context("audit.access", system_actor=operator_name()),
        route,
        {k: str(v) for k, v in query.items() if v is not None},
    )
    return chronicle


async def _with_conn(settings: Settings, action: Any) -> Any:
    import psycopg

    async with await psycopg.AsyncConnection.connect(settings.require_database_url(), autocommit=True) as conn:
        return await action(conn)


def cmd_audit_stream(args: argparse.Namespace) -> None:
    from infra.eventstore import audit

    chronicle = _audited(args, f"cli audit stream {args.id}", {})

    async def pages(conn: Any) -> None:
        after = 0
        while True:
            page = await audit.stream_events(conn, args.id, after, 1000)
            for event in page:
                print_json(event)
            if len(page) < 1000:
                return
            after = page[-1].version

    try:
        asyncio.run(_with_conn(chronicle.settings, pages))
    finally:
        chronicle.close()


def cmd_audit_log(args: argparse.Namespace) -> None:
    from infra.eventstore import audit

    chronicle = _audited(args, "cli audit log", vars(args) | {"run": None})
    where = audit.LogFilter(args.type, args.actor, args.since, args.until)
    try:
        for event in asyncio.run(
            _with_conn(chronicle.settings, lambda c: audit.log_events(c, where, int(args.after), args.limit))
        ):
            print_json(event)
    finally:
        chronicle.close()


def cmd_audit_state(args: argparse.Namespace) -> None:
    from domain.errors import NotFound
    from infra.eventstore import audit

    chronicle = _audited(
        args, f"cli audit state {args.id}", {"version": args.version, "at": args.at, "position": args.position}
    )
    try:
        version = args.version
        if version is None:
            position = int(args.position) if args.position else None
            version = asyncio.run(
                _with_conn(chronicle.settings, lambda c: audit.version_at(c, args.id, at=args.at, position=position))
            )
            if version is None:
                raise CliError(f"stream {args.id} had no events then")
        try:
            print_json(chronicle.audit.state_at(args.id, version))
        except NotFound as e:
            raise CliError(e.reason) from None
    finally:
        chronicle.close()


def cmd_audit_correlation(args: argparse.Namespace) -> None:
    from infra.eventstore import audit

    chronicle = _audited(args, f"cli audit correlation {args.id}", {})
    try:
        tree = asyncio.run(_with_conn(chronicle.settings, lambda c: audit.correlation(c, args.id)))
        if tree is None:
            raise CliError(f"no events with correlation id {args.id}")
        print_json(tree)
    finally:
        chronicle.close()


def cmd_audit_export(args: argparse.Namespace) -> None:
    from infra.eventstore import audit

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
    from infra.delivery.anchors import heads_from
    from infra.eventstore.signing import MalformedHead, parse_head
    from infra.eventstore.verify import ExternalHead, verify

    kept: list[ExternalHead] = []
    if args.against is not None:
        with args.against:
            try:
                kept.append(ExternalHead(args.against.name, parse_head(args.against.read())))
            except MalformedHead as e:
                raise CliError(f"{args.against.name}: {e}") from None
    chronicle = _audited(args, "cli audit verify", {"against": args.against and args.against.name})
    try:
        settings = chronicle.settings
        trusted = [bytes.fromhex(head.head.public_key) for head in kept]
        try:
            trusted.append(seal_key(settings).public)
        except CliError:
            if not trusted:
                raise
        try:
            heads, notes = asyncio.run(heads_from(settings.nats_url or "", settings.namespace))
        except MalformedHead as e:
            raise CliError(f"the newest seal head in JetStream: {e}") from None
        report = verify(settings.require_database_url(), trusted, [*heads, *kept])
        report.notes.extend(notes)
        report.add_snapshot_findings(chronicle.audit.check_snapshots())
    finally:
        chronicle.close()
    print_json(report)
    if not report.ok:
        sys.exit(1)


def cmd_audit_anchor(args: argparse.Namespace) -> None:
    """The newest seal's head, its signature checked, as one canonical JSON line."""
    import psycopg

    from infra.eventstore.signing import encode_head, signature_valid
    from infra.eventstore.verify import SEAL_COLUMNS, _Seal

    chronicle = _audited(args, "cli audit anchor", {})
    try:
        key = seal_key(chronicle.settings)
        with psycopg.connect(chronicle.settings.require_database_url()) as conn:
            row = conn.execute(f"SELECT {SEAL_COLUMNS} FROM seals ORDER BY seq DESC LIMIT 1").fetchone()
    finally:
        chronicle.close()
    if row is None:
        raise CliError("no seal yet: the relay seals the log as it publishes it")
    seal = _Seal.of(row)
    if seal.public_key != key.public or not signature_valid(seal.public_key, seal.seal_hash, seal.signature):
        raise CliError(f"seal {seal.seq} is not signed by this deployment's seal key: run `chronicle audit verify`")
    sys.stdout.buffer.write(encode_head(seal.head()) + b"\n")
    sys.stdout.buffer.flush()

"""The auditors' routes: history as it was recorded, for the auditor and admin roles only. Every
access is itself recorded, as an event in the log (AuditAccess.Recorded)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get
from litestar.params import Parameter, QueryParameter
from litestar.response import Stream

from api.auth import requires_role
from api.commands.common import context, is_number
from api.contract import query
from api.queries.common import INSTANT, Cursor, instant
from api.runtime import RUNTIME, Runtime
from domain.errors import Invalid, NotFound
from domain.identity import Role
from infra.delivery.anchors import external_heads
from infra.eventstore import audit
from infra.eventstore.audit import AuditEvent, CorrelationTree, LogFilter
from infra.eventstore.signing import MalformedHead, load_seal_key
from infra.eventstore.verify import Breach, Verification, verify

Limit = Annotated[int, Parameter(ge=1, le=1000, description="At most 1000")]
Since = Annotated[str | None, QueryParameter(name="from", description="recorded at or after", schema_extra=INSTANT)]
Until = Annotated[str | None, QueryParameter(name="to", description="recorded before", schema_extra=INSTANT)]
At = Annotated[str | None, QueryParameter(description="the state as it was at this time", schema_extra=INSTANT)]


class EventPage(msgspec.Struct):
    items: list[AuditEvent]
    next_cursor: str | None = None


class StreamState(msgspec.Struct):
    stream_id: str
    type: str
    version: int
    state: dict[str, Any]
    erased: bool = False
    """True when some of the person's data in the state was erased (those fields are null)."""


def _cursor(value: str | None) -> int:
    if value is None:
        return 0
    if not is_number(value):
        raise Invalid("cursor: not a cursor this list gave out", field="cursor")
    return int(value)


async def full_verify(runtime: Runtime) -> Verification:
    """`verify` with the deployment's seal key, JetStream's newest seal head, and every snapshot
    checked: what the route and the explorer run."""
    settings = runtime.settings
    js = runtime.nats.jetstream(timeout=5) if runtime.nats is not None and runtime.nats.is_connected else None
    try:
        heads, notes = await external_heads(js, settings.namespace)
    except MalformedHead as e:
        return Verification(False, 0, 0, "0", 0, first_problem=Breach("head_forged", str(e)))
    trusted = [load_seal_key(settings.seal_key, settings.seal_key_file).public]
    report = await runtime.run(verify, settings.database_url or "", trusted, heads)
    report.notes.extend(notes)
    report.add_snapshot_findings(await runtime.run(runtime.chronicle.audit.check_snapshots))
    return report


async def record_access(request: Request[Any, Any, Any], runtime: Runtime) -> None:
    query = {k: v for k, v in request.query_params.items()}
    await runtime.run(runtime.chronicle.audit.record_access, context(request, "audit.access"), request.url.path, query)


class AuditQueries(Controller):
    path = "/v1/audit"
    tags = ["audit"]
    guards = [requires_role(Role.AUDITOR, Role.ADMIN)]
    dependencies = RUNTIME

    @get(
        "/streams/{stream_id:uuid}",
        operation_id="AuditStream",
        summary="A stream's events, in order, with all metadata",
        responses=query(403, 404),
    )
    async def stream(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        stream_id: uuid.UUID,
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> EventPage:
        await record_access(request, runtime)
        async with runtime.views.connection() as conn:
            items = await audit.stream_events(conn, stream_id, _cursor(cursor), limit + 1)
        more = len(items) > limit
        return EventPage(items[:limit], str(items[limit - 1].version) if more else None)

    @get(
        "/events",
        operation_id="AuditLog",
        summary="The global log in its total order, filtered",
        responses=query(403),
    )
    async def events(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        type: str | None = None,
        actor: str | None = None,
        since: Since = None,
        until: Until = None,
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> EventPage:
        await record_access(request, runtime)
        async with runtime.views.connection() as conn:
            where = LogFilter(type, actor, instant(since, "from"), instant(until, "to"))
            items = await audit.log_events(conn, where, _cursor(cursor), limit + 1)
        more = len(items) > limit
        return EventPage(items[:limit], items[limit - 1].position if more else None)

    @get(
        "/streams/{stream_id:uuid}/state",
        operation_id="AuditStreamState",
        summary="The aggregate as it was at a version, a time or a position (exactly one)",
        responses=query(403, 404),
    )
    async def state(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        stream_id: uuid.UUID,
        version: Annotated[int | None, Parameter(ge=1)] = None,
        at: At = None,
        position: str | None = None,
    ) -> StreamState:
        given = [
            name for name, value in (("version", version), ("at", at), ("position", position)) if value is not None
        ]
        if len(given) != 1:
            raise Invalid("give exactly one of version, at, position", field="version")
        if position is not None and not is_number(position):
            raise Invalid("position must be a position token", field="position")
        moment = instant(at, "at")
        await record_access(request, runtime)
        if version is None:
            async with runtime.views.connection() as conn:
                version = await audit.version_at(
                    conn, stream_id, at=moment, position=int(position) if position is not None else None
                )
            if version is None:
                raise NotFound(f"stream {stream_id} had no events then")
        result = await runtime.run(runtime.chronicle.audit.state_at, stream_id, version)
        return StreamState(**result)

    @get(
        "/correlations/{correlation_id:uuid}",
        operation_id="AuditCorrelation",
        summary="Every event caused by one request, as a causation tree",
        responses=query(403, 404),
    )
    async def correlation(
        self, request: Request[Any, Any, Any], runtime: Runtime, correlation_id: uuid.UUID
    ) -> CorrelationTree:
        await record_access(request, runtime)
        async with runtime.views.connection() as conn:
            tree = await audit.correlation(conn, correlation_id)
        if tree is None:
            raise NotFound(f"no events with correlation id {correlation_id}")
        return tree

    @get(
        "/export",
        operation_id="AuditExport",
        summary="The (filtered) log as NDJSON, streamed",
        responses=query(403),
        media_type="application/x-ndjson",
    )
    async def export(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        type: str | None = None,
        actor: str | None = None,
        since: Since = None,
        until: Until = None,
    ) -> Stream:
        await record_access(request, runtime)
        where = LogFilter(type, actor, instant(since, "from"), instant(until, "to"))

        async def lines() -> AsyncIterator[bytes]:
            async with runtime.views.connection() as conn:
                async for chunk in audit.export(conn, where):
                    yield chunk

        return Stream(lines(), media_type="application/x-ndjson")

    @get(
        "/verify",
        operation_id="AuditVerify",
        summary="Recompute every hash and seal, check signatures, external heads and snapshots; the first broken place",
        responses=query(403),
    )
    async def verify(self, request: Request[Any, Any, Any], runtime: Runtime) -> Response[Verification]:
        await record_access(request, runtime)
        return Response(await full_verify(runtime))

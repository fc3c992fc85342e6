"""The explorer's reading pages: the log, a stream with time travel, a correlation's causation tree,
and the projections. They read through the same queries as the auditors' routes
(infra.eventstore.audit) and record every use the same way (AuditAccess.Recorded)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any
from urllib.parse import urlencode

from litestar import Controller, Request, get
from litestar.params import Parameter, QueryParameter
from litestar.response import Redirect, Template

from api.audit import record_access
from api.auth import requires_role
from api.cli.projections import known_projections
from api.commands.common import is_number
from api.explorer.common import HEADERS, BadInput, as_json, as_pretty_json, local_input, page, parse_time
from api.explorer.session import READERS
from api.runtime import RUNTIME, Runtime
from domain.errors import NotFound
from infra.eventstore import audit
from infra.eventstore.audit import AuditEvent, LogFilter
from infra.views.operations import statuses

STREAM_PAGE = 50  # events of a stream's timeline per page
LAST_POSITION = 2**63 - 1
LAG_CAP = 10_000  # events behind counted at most (each count scans them): the page stays fast far behind
PageSize = Annotated[int, Parameter(ge=1, le=200)]


def _uuid(value: str | None, field: str) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        raise BadInput(f"{field}: not an id (a UUID)") from None


def _position(value: str | None, field: str = "cursor") -> int:
    if not value:
        return 0
    if not is_number(value):
        raise BadInput(f"{field}: not a position this log gave out")
    return int(value)


def _shown(event: AuditEvent, digest: str | None = None) -> dict[str, Any]:
    """An event for display: its data in full, and in one line what it set (its time aside)."""
    sets = ", ".join(f"{k}: {as_json(v)}" for k, v in sorted(event.data.items()) if k != "timestamp")
    return {"e": event, "data": as_pretty_json(event.data), "hash": digest, "sets": _clipped(sets, 160)}


def _clipped(text: str, size: int) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"


class ExplorerPages(Controller):
    path = "/explorer"
    guards = [requires_role(*READERS)]
    dependencies = RUNTIME

    @get("/", name="explorer:home")
    async def home(self) -> Redirect:
        return Redirect("/explorer/log", status_code=303, headers=HEADERS)

    @get("/log", name="explorer:log")
    async def log(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        type: str | None = None,
        actor: str | None = None,
        stream: str | None = None,
        since: Annotated[str | None, QueryParameter(name="from")] = None,
        until: Annotated[str | None, QueryParameter(name="to")] = None,
        cursor: str | None = None,
        limit: PageSize = 50,
    ) -> Template:
        await record_access(request, runtime)
        filters = {"type": type, "actor": actor, "stream": stream, "from": since, "to": until}
        filters = {k: v.strip() for k, v in filters.items() if v and v.strip()}
        try:
            where = LogFilter(
                filters.get("type"),
                filters.get("actor"),
                parse_time(filters.get("from"), "from"),
                parse_time(filters.get("to"), "to"),
                _uuid(filters.get("stream"), "stream"),
            )
            after = _position(cursor)
        except BadInput as e:
            return page("log.html", 422, error=str(e), filters=filters, events=[], next_url=None, first_url=None)
        async with runtime.views.connection() as conn:
            items = await audit.log_events(conn, where, after, limit + 1)
            digests = await audit.hashes(conn, [e.position for e in items[:limit]])
        more = len(items) > limit
        query = {**filters, "limit": str(limit)} if limit != 50 else filters
        return page(
            "log.html",
            filters=filters,
            events=[_shown(e, digests.get(e.position)) for e in items[:limit]],
            next_url=f"/explorer/log?{urlencode({**query, 'cursor': items[limit - 1].position})}" if more else None,
            first_url=f"/explorer/log?{urlencode(query)}" if after else None,
            error=None,
        )

    @get("/streams/{stream_id:uuid}", name="explorer:stream")
    async def stream(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        stream_id: uuid.UUID,
        version: str | None = None,
        at: str | None = None,
    ) -> Template:
        await record_access(request, runtime)
        async with runtime.views.connection() as conn:
            latest = await audit.version_at(conn, stream_id, position=LAST_POSITION)
            if latest is None:
                raise NotFound(f"no stream {stream_id}")
            chosen = await self._chosen(conn, stream_id, latest, version, at)
            first = (chosen - 1) // STREAM_PAGE * STREAM_PAGE
            events = await audit.stream_events(conn, stream_id, first, STREAM_PAGE)
        now = await runtime.run(runtime.chronicle.audit.state_at, stream_id, chosen)
        before = await runtime.run(runtime.chronicle.audit.state_at, stream_id, chosen - 1) if chosen > 1 else None
        current = next(e for e in events if e.version == chosen)
        return page(
            "stream.html",
            stream_id=stream_id,
            aggregate=now["type"],
            version=chosen,
            latest=latest,
            current=_shown(current),
            at=local_input(current.recorded_at),
            fields=_changes(now["state"], before["state"] if before else None),
            events=[_shown(e) for e in events],
            older=first if first else None,
            newer=first + STREAM_PAGE + 1 if first + STREAM_PAGE < latest else None,
        )

    @staticmethod
    async def _chosen(conn: Any, stream_id: uuid.UUID, latest: int, version: str | None, at: str | None) -> int:
        if version:
            if not is_number(version) or not 1 <= int(version) <= latest:
                raise BadInput(f"version: the stream has versions 1 to {latest}")
            return int(version)
        when = parse_time(at, "at")
        if when is None:
            return latest
        found = await audit.version_at(conn, stream_id, at=when)
        if found is None:
            raise BadInput("at: the stream had no events yet at that time")
        return int(found)

    @get("/correlations/{correlation_id:uuid}", name="explorer:correlation")
    async def correlation(
        self, request: Request[Any, Any, Any], runtime: Runtime, correlation_id: uuid.UUID
    ) -> Template:
        await record_access(request, runtime)
        async with runtime.views.connection() as conn:
            tree = await audit.correlation(conn, correlation_id)
        if tree is None:
            raise NotFound(f"no events with correlation id {correlation_id}")
        return page("correlation.html", tree=tree)

    @get("/positions/{position:str}", name="explorer:position")
    async def position(
        self, request: Request[Any, Any, Any], runtime: Runtime, position: str, after: bool = False
    ) -> Redirect:
        """The event at a position of the log (or, with `after`, the first one after it), on its
        stream's page: where verify's first broken place is."""
        await record_access(request, runtime)
        start = _position(position, "position") - (0 if after else 1)
        async with runtime.views.connection() as conn:
            found = await audit.log_events(conn, LogFilter(), max(start, 0), 1)
        if not found:
            raise NotFound(f"no event at or after position {position}")
        event = found[0]
        return Redirect(
            f"/explorer/streams/{event.stream_id}?version={event.version}#v{event.version}",
            status_code=303,
            headers=HEADERS,
        )

    @get("/find", name="explorer:find")
    async def find(self, request: Request[Any, Any, Any], runtime: Runtime, id: str | None = None) -> Redirect:
        """A stream or a correlation, by its id."""
        await record_access(request, runtime)
        wanted = _uuid(id, "id")
        if wanted is None:
            raise BadInput("id: give a stream id or a correlation id")
        async with runtime.views.connection() as conn:
            if await audit.version_at(conn, wanted, position=LAST_POSITION) is not None:
                return Redirect(f"/explorer/streams/{wanted}", status_code=303, headers=HEADERS)
            if await audit.correlation(conn, wanted) is not None:
                return Redirect(f"/explorer/correlations/{wanted}", status_code=303, headers=HEADERS)
        raise NotFound(f"no stream and no correlation has the id {wanted}")

    @get("/projections", name="explorer:projections")
    async def projections(self, request: Request[Any, Any, Any], runtime: Runtime) -> Template:
        await record_access(request, runtime)
        rows = await statuses(runtime.settings, known_projections(), lag_cap=LAG_CAP)
        async with runtime.views.connection() as conn:
            parked = await (
                await conn.execute(
                    "SELECT DISTINCT ON (projection) projection, event_id, position, type, error, parked_at"
                    " FROM dead_letters WHERE resolved IS NULL ORDER BY projection, id DESC"
                )
            ).fetchall()
        letters = {
            r[0]: {"event_id": r[1], "position": str(r[2]), "type": r[3], "error": r[4], "at": r[5]} for r in parked
        }
        return page("projections.html", rows=rows, parked=letters, lag_cap=LAG_CAP)


def _changes(now: dict[str, Any], before: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each field of the state, marked when the chosen event changed it (with what it was); the
    first event sets them all."""
    fields = []
    for key in sorted(now.keys() | (before or {}).keys()):
        value, old = now.get(key, _ABSENT), (before or {}).get(key, _ABSENT)
        fields.append(
            {
                "name": key,
                "value": as_json(value) if value is not _ABSENT else None,
                "was": as_json(old) if old is not _ABSENT else None,
                "changed": before is None or value != old,
            }
        )
    return fields


_ABSENT = object()

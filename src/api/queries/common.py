"""What query routes share: read-your-writes (`X-Min-Position`), opaque cursors, ETags, paging."""

from __future__ import annotations

import base64
import time
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request
from litestar.exceptions import HTTPException
from litestar.params import HeaderParameter, Parameter

from api.commands.common import is_number
from api.problems import ServiceUnavailable
from api.runtime import Runtime
from domain.errors import Invalid
from infra.eventstore.recorder import was_given_out
from infra.views.sqlstore import version_position

MIN_POSITION = HeaderParameter(
    name="X-Min-Position",
    required=False,
    description="A `position` from a command: answer only once every view this route "
    "reads has applied it (bounded wait; 503 with Retry-After if it takes longer).",
    schema_extra={"type": "string", "oneOf": None, "pattern": "^[0-9]{1,19}$", "examples": ["873463808"]},
)
MinPosition = Annotated[str | None, MIN_POSITION]
Limit = Annotated[int, Parameter(ge=1, le=200, description="Page size, at most 200")]
Cursor = Annotated[str | None, Parameter(description="`next_cursor` of the previous page")]


INSTANT = {"type": "string", "oneOf": None, "format": "date-time", "examples": ["2026-11-27T09:00:00Z"]}


def instant(value: str | None, name: str) -> datetime | None:
    """An RFC 3339 date-time with its offset (`2026-11-27T09:00:00Z`), as the document declares it:
    a bare number (which Litestar would read as a Unix time) or a time without offset is a 422."""
    if value is None:
        return None
    try:
        parsed = msgspec.convert(value, datetime)
    except msgspec.ValidationError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise Invalid(f"{name} must be an RFC 3339 date-time with an offset, e.g. 2026-11-27T09:00:00Z", field=name)
    return parsed


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(values)).decode().rstrip("=")


def decode_cursor(cursor: str, shape: Any) -> Any:
    """The values of a cursor this list gave out, as the tuple type `shape` (e.g.
    `tuple[datetime, UUID]`); anything else is a 422, never a value that reaches SQL."""
    try:
        values = msgspec.json.decode(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return msgspec.convert(values, shape)
    except (ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise HTTPException(
            status_code=422,
            detail="cursor: not a cursor this list gave out",
            extra=[{"key": "cursor", "message": "unknown cursor"}],
        ) from None


def etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}


async def checkpoints(runtime: Runtime, names: list[str]) -> dict[str, int]:
    """Each named projection's checkpoint (its live version's)."""
    return {name: position for name, (_, position) in (await live_checkpoints(runtime, names)).items()}


async def live_checkpoints(runtime: Runtime, names: list[str]) -> dict[str, tuple[int, int]]:
    """Each named projection's live version and its checkpoint, SQL ones (and processes' tracking
    rows) from PostgreSQL and Redis ones from Redis."""
    async with runtime.views.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT p.projection, p.kind, p.live_version,"
                f" coalesce({version_position('p.projection', 'p.live_version')}, t.notification_id, 0) FROM projections p"
                " LEFT JOIN tracking t ON t.application_name = p.projection AND p.kind = 'process'"
                " WHERE p.projection = ANY(%s)",
                (names,),
            )
        ).fetchall()
    found = {
        name: (int(version), int(position)) for name, kind, version, position in rows if kind in ("sql", "process")
    }
    redis_views = [(name, int(version)) for name, kind, version, _ in rows if kind == "redis"]
    if redis_views:
        keys = [runtime.live_versions.prefix_of(name, version) + "checkpoint" for name, version in redis_views]
        values = await runtime.redis.mget(keys)
        found |= {name: (version, int(value or 0)) for (name, version), value in zip(redis_views, values, strict=True)}
    return found


async def _refuse_unknown(runtime: Runtime, position: int) -> None:
    """A position beyond the log's end was never given out by a command: no wait can reach it."""
    async with runtime.views.connection() as conn:
        if not await was_given_out(conn, position):
            raise Invalid("no command gave out this position", field="X-Min-Position")


def position_of(token: str | None) -> int | None:
    """The `X-Min-Position` as a number (None without one); a malformed one is a 400."""
    if token is None:
        return None
    if not is_number(token):
        raise HTTPException(status_code=400, detail="X-Min-Position must be a position token from a command")
    return int(token)


async def wait_for_position(
    runtime: Runtime, request: Request[Any, Any, Any], token: str | None, projections: list[str]
) -> None:
    """Read-your-writes: returns once every projection has applied `token`'s position, woken by the
    projectors' checkpoint announcements, and reading the stores after 50 ms and every 200 ms
    besides (an announcement is only a hint). At most `min_position_max_waiters` requests of this
    process wait at once; one more is a 503 at once."""
    position = position_of(token)
    if position is None:
        return
    if runtime.position_waiters >= runtime.settings.min_position_max_waiters:
        raise ServiceUnavailable("too many requests are waiting for their views already; retry shortly", retry_after=1)
    runtime.position_waiters += 1
    try:
        await _wait(runtime, position, projections)
    finally:
        runtime.position_waiters -= 1


async def _wait(runtime: Runtime, position: int, projections: list[str]) -> None:
    watcher = runtime.checkpoints
    versions = {name: await runtime.live_versions.get(name) for name in projections}

    def behind() -> list[str]:
        return [n for n in projections if watcher.positions.get((n, versions[n]), -1) < position]

    deadline = time.monotonic() + runtime.settings.min_position_wait_ms / 1000
    # The projectors announce a checkpoint within milliseconds of committing it: wait for that
    # before reading the stores, which costs every waiting request a round trip to each server.
    next_read = min(time.monotonic() + 0.05, deadline)  # and always once before answering 503
    while behind():
        now = time.monotonic()
        if now >= next_read:
            for name, (live, seen) in (await live_checkpoints(runtime, behind())).items():
                if live != versions[name]:  # switched by a rebuild since we last looked: read the new one
                    runtime.live_versions.learn(name, live)
                    versions[name] = live
                watcher.learn(name, live, seen)
            next_read = now + 0.2
            if not behind():
                return
        if now >= deadline:
            await _refuse_unknown(runtime, position)
            raise ServiceUnavailable(
                f"the views {', '.join(sorted(behind()))} have not caught up with that position yet", retry_after=1
            )
        await watcher.wait(min(0.05, max(0.0, deadline - now)))

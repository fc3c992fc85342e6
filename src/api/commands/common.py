"""What every command route shares: the response, who-and-why, If-Match, Idempotency-Key."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import time
import uuid
from collections.abc import Callable
from typing import Annotated, Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.params import HeaderParameter

from api.problems import correlation_id
from api.runtime import Runtime
from commands.base import Actor, CommandResult, ConcurrentUpdate, Context, IdempotencyKey, PreconditionFailed
from domain.errors import Conflict, DomainError
from domain.identity import MAX_NAME
from domain.work import MAX_DESCRIPTION
from infra.eventstore.idempotency import RecordedResponse
from infra.keys import derived_key
from infra.observe import logs, tracing
from infra.observe.metrics import COMMAND_SECONDS, COMMANDS

IF_MATCH = HeaderParameter(
    name="If-Match",
    required=False,
    description="The version the client last saw (an ETag); a mismatch is 412 and stores nothing.",
    schema_extra={"type": "string", "oneOf": None, "pattern": r'^ *(\*|(W/)?"?[0-9]{1,19}"?) *$', "examples": ['"3"']},
)
IDEMPOTENCY_KEY = HeaderParameter(
    name="Idempotency-Key",
    required=False,
    description="1-255 printable ASCII characters; send the same key again to get the first response again.",
    schema_extra={"type": "string", "oneOf": None, "pattern": "^[ -~]{1,255}$", "examples": ["order-2026-11-27-0001"]},
)
SECRET_BODY_FIELDS = frozenset({"password", "current_password", "new_password", "refresh_token"})
"""Body fields an Idempotency-Key's request hash never covers: the hash is stored, and must not
let anyone test guesses of a password against it."""
IfMatch = Annotated[str | None, IF_MATCH]
Key = Annotated[str | None, IDEMPOTENCY_KEY]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME)]
Description = Annotated[str, msgspec.Meta(max_length=MAX_DESCRIPTION)]


class CommandAccepted(msgspec.Struct):
    """`position` is an opaque token of the command's last event in the global order (null when the
    command changed nothing); queries can wait for it with `X-Min-Position`."""

    id: uuid.UUID
    version: int
    position: str | None


def position_token(position: int | None) -> str | None:
    return None if position is None else str(position)


def is_number(text: str) -> bool:
    """ASCII digits of a number PostgreSQL's bigint holds (a position or a version; `str.isdigit`
    also takes '²')."""
    return re.fullmatch(r"[0-9]{1,19}", text) is not None and int(text) < 2**63


def expected_version(if_match: str | None) -> int | None:
    """`If-Match: 3`, `"3"` or `W/"3"`; `*` means any version."""
    if if_match is None or if_match.strip() == "*":
        return None
    tag = if_match.strip().removeprefix("W/").strip('"')
    if not is_number(tag):
        raise HTTPException(status_code=400, detail="If-Match must be a version number, e.g. If-Match: 3")
    return int(tag)


def accepted(result: CommandResult, status: int, ctx: Context, replayed: bool = False) -> Response[CommandAccepted]:
    headers = {"ETag": f'"{result.version}"', "X-Correlation-Id": str(ctx.correlation_id)}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(
        CommandAccepted(result.id, result.version, position_token(result.position)), status_code=status, headers=headers
    )


def context(request: Request[Any, Any, Any], command: str) -> Context:
    actor = request.scope.get("user")
    _uuid_header(request, "X-Correlation-Id")  # a malformed one is a 400
    correlation = logs.correlation_id() or correlation_id(request)
    return Context(
        command=command,
        actor=actor if isinstance(actor, Actor) else None,
        correlation_id=correlation,
        causation_id=uuid.uuid4(),
        trace_parent=tracing.traceparent(),
    )


async def run_command(
    request: Request[Any, Any, Any],
    runtime: Runtime,
    command: str,
    handler: Callable[..., CommandResult],
    *args: Any,
    status: int = 200,
    idempotency_key: str | None = None,
    hashing: bool = False,
    **kwargs: Any,
) -> Response[CommandAccepted]:
    """Runs one command in a worker thread, counted by outcome (ok, conflict, rejected,
    idempotent_replay, error). The command and its outcome are attributes of the request's span,
    which covers validation, load, decide and append (a span of its own would cost more than
    the rest of the tracing of a request)."""
    started = time.perf_counter()
    outcome = "error"
    try:
        response = await _run_command(
            request, runtime, command, handler, args, kwargs, status, idempotency_key, hashing
        )
        outcome = "idempotent_replay" if "Idempotent-Replayed" in response.headers else "ok"
        return response
    except (Conflict, PreconditionFailed):
        outcome = "conflict"
        raise
    except (DomainError, HTTPException):
        outcome = "rejected"
        raise
    finally:
        COMMANDS.labels(command, outcome).inc()
        COMMAND_SECONDS.observe(time.perf_counter() - started)
        tracing.annotate({"chronicle.command": command, "chronicle.command.outcome": outcome})


async def _run_command(
    request: Request[Any, Any, Any],
    runtime: Runtime,
    command: str,
    handler: Callable[..., CommandResult],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    status: int,
    idempotency_key: str | None,
    hashing: bool,
) -> Response[CommandAccepted]:
    """Honours Idempotency-Key: a key seen before with the same request returns the first
    response; with a different request it is a 422. Two identical requests at once: one appends,
    the other finds the key when its own append collides. A `hashing` command hashes a password
    and runs on the threads kept for that."""
    ctx = context(request, command)
    run = runtime.run_hashing if hashing else runtime.run
    if idempotency_key is None:
        return accepted(await run(handler, ctx, *args, **kwargs), status, ctx)
    request_hash = await _request_hash(request, hash_key(runtime.settings.require_jwt_secret()))
    key = IdempotencyKey(_scope(ctx), _valid_key(idempotency_key), request_hash, status)
    replay = await _replay(runtime, key, ctx)
    if replay is not None:
        return replay
    ctx = dataclasses.replace(ctx, idempotency=key)
    try:
        return accepted(await run(handler, ctx, *args, **kwargs), status, ctx)
    except ConcurrentUpdate:
        replay = await _replay(runtime, key, ctx)
        if replay is not None:
            return replay
        raise


async def _replay(runtime: Runtime, key: IdempotencyKey, ctx: Context) -> Response[CommandAccepted] | None:
    recorded: RecordedResponse | None = await runtime.run(runtime.chronicle.idempotency.find, key.scope, key.key)
    if recorded is None:
        return None
    if recorded.request_hash != key.request_hash:
        raise HTTPException(status_code=422, detail="this Idempotency-Key was already used for a different request")
    result = CommandResult(recorded.aggregate_id, recorded.version, recorded.position)
    return accepted(result, recorded.status, ctx, replayed=True)


def _scope(ctx: Context) -> str:
    return str(ctx.actor.user_id) if ctx.actor else "anonymous"


def _valid_key(key: str) -> str:
    if not key or len(key) > 255 or not key.isascii() or not key.isprintable():
        raise HTTPException(status_code=400, detail="Idempotency-Key must be 1-255 printable ASCII characters")
    return key


def hash_key(jwt_secret: str) -> bytes:
    """The server's key for request hashes, derived from the JWT secret (infra.keys); a new secret
    makes earlier keys answer 422 if sent again, never replay wrongly."""
    return derived_key(jwt_secret, "chronicle idempotency request hash")


async def _request_hash(request: Request[Any, Any, Any], key: bytes) -> bytes:
    """An HMAC of the method, path and canonical body without its secret fields."""
    body = await request.body()
    try:
        decoded = msgspec.json.decode(body) if body else None
    except msgspec.DecodeError:
        decoded = None  # the route decoded it already, so this does not happen; never hash raw secrets
    if isinstance(decoded, dict):
        decoded = {k: v for k, v in decoded.items() if k not in SECRET_BODY_FIELDS}
    canonical = msgspec.json.encode(decoded, order="sorted")
    message = b"%s %s\n%s" % (request.method.encode(), request.url.path.encode(), canonical)
    return hmac.new(key, message, hashlib.sha256).digest()


def _uuid_header(request: Request[Any, Any, Any], name: str) -> uuid.UUID | None:
    value = request.headers.get(name)
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        raise HTTPException(status_code=400, detail=f"{name} must be a UUID") from None

"""The OpenAPI contract, written from the routes themselves.

A route declares what it can answer with the helpers here: `command(...)`, `query(...)`,
`public(...)` add the statuses every route of that kind can give (a malformed header 400, a NUL in
the query 422, a server down 503; a missing token 401; a command's 413 body, 422 idempotency
clash and 429 rate limit) to the ones the route names, each as the shared `Problem` schema in
`application/problem+json`. Litestar writes the document from those specs and the routes' Struct
types; `finish_document` then adds what Litestar's response specs cannot carry, again from the
routes: each status's headers (`Retry-After` on 429 and 503, `RateLimit-*` on 429, `ETag` on 412,
`WWW-Authenticate` on 401), `security: []` on public routes, and the links of `opt["links"]`.
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.datastructures import ResponseHeader
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import (
    Example,
    Link,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    Reference,
    Schema,
)
from litestar.openapi.spec.enums import OpenAPIType
from litestar.params import Body, BodyKwarg
from litestar.routes import HTTPRoute

from api.problems import PROBLEM_JSON, Problem

DESCRIPTIONS = {
    400: "Malformed JSON, form or header",
    401: "No valid access token",
    403: "Not allowed to do this",
    404: "Unknown id",
    409: "Conflicts with the current state",
    412: "If-Match does not match the version",
    413: "Body larger than 1 MiB",
    422: "Unknown field, bad value, a NUL in the query, or a rule of the domain refused it",
    429: "Too many requests; retry after Retry-After seconds",
    503: "A server is unavailable or a wait ran out; retry after Retry-After seconds",
}

# Every route: a malformed header, a NUL in the query string, a server down.
EVERY_ROUTE = (400, 422, 503)
# Every route behind a token.
GUARDED = (*EVERY_ROUTE, 401)
# Every command: a body too large, an Idempotency-Key reused for another request, a rate limit.
COMMAND = (*GUARDED, 413, 429)


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """The given statuses, each answered with the shared `Problem` schema."""
    return {
        status: ResponseSpec(
            data_container=Problem,
            description=DESCRIPTIONS[status],
            media_type=PROBLEM_JSON,
            generate_examples=False,
        )
        for status in sorted(set(statuses))
    }


def command(*statuses: int) -> dict[int, ResponseSpec]:
    """A command route's responses: its own statuses and those every command can give."""
    return problems(*COMMAND, *statuses)


def query(*statuses: int) -> dict[int, ResponseSpec]:
    """A query route's responses (read behind a token)."""
    return problems(*GUARDED, *statuses)


def public(*statuses: int, rate_limited: bool = True) -> dict[int, ResponseSpec]:
    """A route anyone may call (declare it with `opt=PUBLIC` too, so the document says
    `security: []`). The routes under /v1/auth are rate limited."""
    return problems(*EVERY_ROUTE, *((429,) if rate_limited else ()), *statuses)


def _header(description: str, kind: OpenAPIType = OpenAPIType.STRING) -> OpenAPIHeader:
    return OpenAPIHeader(schema=Schema(type=kind), description=description)


RETRY_AFTER = _header("Seconds to wait before trying again", OpenAPIType.INTEGER)
RATE_LIMIT_HEADERS = {
    "RateLimit-Limit": _header("Requests allowed in the window", OpenAPIType.INTEGER),
    "RateLimit-Remaining": _header("Requests left in the window", OpenAPIType.INTEGER),
    "RateLimit-Reset": _header("Seconds until the window resets", OpenAPIType.INTEGER),
    "RateLimit-Policy": _header("The limit and its window, e.g. `10;w=60`"),
}
HEADERS_BY_STATUS: dict[str, dict[str, OpenAPIHeader]] = {
    "401": {"WWW-Authenticate": _header("`Bearer`: send an access token")},
    "412": {"ETag": _header("The aggregate's current version, to send as If-Match")},
    "429": {"Retry-After": RETRY_AFTER, **RATE_LIMIT_HEADERS},
    "503": {"Retry-After": RETRY_AFTER},
}

ETAG = ResponseHeader(name="ETag", description="The version, quoted: send it back as If-Match", documentation_only=True)
COMMAND_HEADERS = [
    ETAG,
    ResponseHeader(
        name="X-Correlation-Id",
        description="The request's correlation id: its story in GET /v1/audit/correlations/{id}",
        documentation_only=True,
    ),
    ResponseHeader(
        name="Idempotent-Replayed",
        description="`true`: a replay, the first response to this Idempotency-Key sent again",
        required=False,
        documentation_only=True,
    ),
]


def links(**targets: dict[str, str]) -> dict[str, Any]:
    """`opt` of a route whose success response links to other operations: operationId → its
    parameters, each a runtime expression such as `$response.body#/id`."""
    return {"links": targets}


def finish_document(app: Litestar) -> None:
    """Adds to the app's OpenAPI document what Litestar's response specs cannot say (see the
    module docstring). Runs once, when the app is built, before the document is first served."""
    document = app.openapi_schema
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        item = (document.paths or {}).get(route.path_format or "/")
        if item is None:
            continue
        for handler in route.route_handlers:
            if not handler.resolve_include_in_schema():
                continue
            for method in handler.http_methods:
                operation = getattr(item, method.lower(), None)
                if isinstance(operation, Operation):
                    _finish(operation, handler.opt)


def _finish(operation: Operation, opt: dict[str, Any]) -> None:
    if opt.get("exclude_from_auth"):
        operation.security = []
    for status, response in (operation.responses or {}).items():
        if not isinstance(response, OpenAPIResponse):
            continue
        if status in HEADERS_BY_STATUS:
            response.headers = {**(response.headers or {}), **HEADERS_BY_STATUS[status]}
        if status == "503" and response.content is not None and PROBLEM_JSON not in response.content:
            # A route with its own 503 body (health) still answers a failure of the server as a problem.
            response.content[PROBLEM_JSON] = OpenAPIMediaType(schema=Reference(ref="#/components/schemas/Problem"))
        for header in (response.headers or {}).values():
            if isinstance(header, OpenAPIHeader) and header.schema is None and header.content is None:
                header.schema = Schema(type=OpenAPIType.STRING)  # a documentation-only header of a route
        for media in (response.content or {}).values():
            schema = media.schema
            if isinstance(schema, Schema) and schema.one_of and all(isinstance(o, Reference) for o in schema.one_of):
                # A union of Structs where one shape is a subset of another (health's public and
                # detailed bodies) matches both: "any of", not Litestar's "exactly one of".
                schema.any_of, schema.one_of = schema.one_of, None
        if status.startswith("2") and opt.get("links"):
            response.links = {
                target: Link(operation_id=target, parameters=parameters) for target, parameters in opt["links"].items()
            }


def example(value: dict[str, Any], summary: str | None = None) -> BodyKwarg:
    """A JSON request body's marker, with an example of it for the document (and its readers)."""
    marker: BodyKwarg = Body(examples=[Example(summary=summary, value=value)])
    return marker

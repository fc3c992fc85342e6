"""Authentication: short-lived JWT access tokens (issuer, audience, user and session id; HS256
only) and rotating refresh tokens (see commands.identity). Every request checks its session and
reads its user's current roles (`api.access`), so a logout, a role change or a password change
takes effect on the next request. Authorization by role is a route guard; by project membership
it is the commands' business."""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Self, cast

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.spec import Components, OAuthFlow, OAuthFlows, SecurityScheme
from litestar.security.jwt import JWTAuth, Token

from api.access import AccessCheck
from api.limits import CountAhead
from commands.base import Actor
from commands.identity import LoginResult
from domain.identity import Role
from infra.settings import Settings

PUBLIC = {"exclude_from_auth": True}
ISSUER = "chronicle"
AUDIENCE = "chronicle-api"
ALGORITHM = "HS256"


class VerifiedTokens:
    """Tokens that passed verification, by their full text (signature included) with the secret and
    algorithm they were checked against; the oldest are forgotten beyond `maxsize`."""

    def __init__(self, maxsize: int = 10_000) -> None:
        self.maxsize = maxsize
        self._tokens: OrderedDict[tuple[str, str, str], Token] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, str]) -> Token | None:
        return self._tokens.get(key)

    def put(self, key: tuple[str, str, str], token: Token) -> None:
        with self._lock:
            self._tokens[key] = token
            while len(self._tokens) > self.maxsize:
                self._tokens.popitem(last=False)


class RememberedToken(Token):
    """Remembers tokens it has verified, until they expire, in the `VerifiedTokens` of its auth
    (each `jwt_auth` makes its own subclass with its own: see `remembering`).

    PyJWT spends about a tenth of a millisecond on every HS256 decode (it checks, each time, that
    the secret is not a PEM/SSH/DER key) and a client sends the same bearer token with every
    request. Only a byte-identical token that already passed verification skips it; expiry is
    still checked on every use. Issuer and audience were checked when it was verified: every
    decode through one auth's class passes that auth's same options.
    """

    verified: ClassVar[VerifiedTokens]

    @classmethod
    def decode(cls, encoded_token: str, secret: str, algorithm: str, *args: Any, **kwargs: Any) -> Self:
        key = (encoded_token, secret, algorithm)  # the other options (issuer, audience…) are the auth's own
        known = cls.verified.get(key)
        if known is not None and known.exp > datetime.now(UTC):
            return cast(Self, known)
        token = super().decode(encoded_token, secret, algorithm, *args, **kwargs)
        cls.verified.put(key, token)
        return token


def remembering(verified: VerifiedTokens) -> type[RememberedToken]:
    """A token class whose remembered tokens are `verified`'s: owned by one app, not the module."""
    return type("RememberedToken", (RememberedToken,), {"verified": verified})


async def _actor_of(token: Token, connection: ASGIConnection[Any, Any, Any, Any]) -> Actor:
    """The caller with the roles they have now, if their session is alive (else 401)."""
    try:
        user_id = uuid.UUID(token.sub)
    except ValueError:
        raise NotAuthorizedException("the access token is malformed") from None
    access: AccessCheck = connection.app.state.runtime.access
    ahead: CountAhead | None = connection.app.state.get("count_ahead")
    method = str(connection.scope.get("method", ""))  # a websocket has none
    count = None if ahead is None else ahead.of(connection.scope, method, connection.url.path, user_id)
    return await access.actor(user_id, session_of(token), count)


TOKEN_URL = "/v1/auth/token"


@dataclass
class PasswordFlowJWTAuth(JWTAuth[Actor, Token]):
    """Litestar's JWT bearer auth, declared in the OpenAPI document as what it also is: an OAuth2
    password flow whose token endpoint is `POST /v1/auth/token` (RFC 6749), so OAuth2 clients and
    the docs page's "Authorize" button can log in."""

    @property
    def openapi_components(self) -> Components:
        flow = OAuthFlow(token_url=TOKEN_URL, refresh_url=TOKEN_URL, scopes={})
        scheme = SecurityScheme(type="oauth2", description=self.description, flows=OAuthFlows(password=flow))
        return Components(security_schemes={self.openapi_security_scheme_name: scheme})


def jwt_auth(settings: Settings) -> JWTAuth[Actor, Token]:
    return PasswordFlowJWTAuth(
        retrieve_user_handler=_actor_of,
        token_secret=settings.require_jwt_secret(),
        algorithm=ALGORITHM,
        accepted_issuers=[ISSUER],
        accepted_audiences=[AUDIENCE],
        strict_audience=True,
        require_claims=["iss", "aud", "exp", "iat", "sub"],
        default_token_expiration=timedelta(seconds=settings.access_token_ttl_s),
        exclude=["^/schema"],
        exclude_opt_key="exclude_from_auth",
        token_cls=remembering(VerifiedTokens()),
        openapi_security_scheme_name="OAuth2PasswordBearer",
        description="An access token from POST /v1/auth/token (OAuth2 password or refresh_token grant) or "
        "POST /v1/auth/login, sent as `Authorization: Bearer …`.",
    )


def access_token(auth: JWTAuth[Actor, Token], login: LoginResult) -> str:
    return auth.create_token(
        identifier=str(login.user_id),
        token_issuer=ISSUER,
        token_audience=AUDIENCE,
        token_extras={"roles": sorted(r.value for r in login.roles), "sid": login.session_id.hex},
        token_unique_jwt_id=uuid.uuid4().hex,
    )


def session_of(token: Token) -> uuid.UUID:
    try:
        return uuid.UUID(hex=str(token.extras["sid"]))
    except (KeyError, ValueError):
        raise NotAuthorizedException("the access token names no session") from None


async def _unreachable(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("only used to authenticate")


async def optional_actor(connection: ASGIConnection[Any, Any, Any, Any]) -> Actor | None:
    """The caller of a public route, if it sent a valid access token: checked exactly as the
    authentication middleware checks it (the same middleware, built from the app's JWTAuth)."""
    if not connection.headers.get("Authorization"):
        return None
    define = connection.app.state.jwt_auth.middleware
    middleware = define.middleware(app=_unreachable, **define.kwargs)
    try:
        result = await middleware.authenticate_request(connection)
    except NotAuthorizedException:
        return None
    return result.user if isinstance(result.user, Actor) else None


def requires_role(*roles: Role) -> Any:
    """A guard by role. `OPTIONS` passes: Litestar answers it (with `Allow`) for every path, before
    and without authentication, and it tells nothing a role should hide."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if connection.scope.get("method") == "OPTIONS":
            return
        actor = connection.scope.get("user")
        if not isinstance(actor, Actor):
            raise NotAuthorizedException("authentication required")
        if not actor.roles & set(roles):
            raise PermissionDeniedException(f"this needs the role {' or '.join(r.value for r in roles)}")

    return guard

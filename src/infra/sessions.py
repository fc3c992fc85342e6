"""Access states in Redis: whether a session is alive and what its user may do now, read on every
authenticated request (api.auth) and written by the identity write side (commands.identity).

Two keys per request, read with one MGET: `<ns>:access:user:<id>` ("version epoch roles") and
`<ns>:access:session:<id>` ("version user epoch ended"). The event store stays the truth: a key
that is missing is read from PostgreSQL and filled in, and when Redis does not answer every
request reads PostgreSQL.

A change is safe against a Redis that fails half-way. Before the append, the writer *holds* the
keys it will change (they read `held`: readers go to PostgreSQL and do not fill them); if it
cannot, the command is refused and nothing is stored. After the append it publishes the new
states over the hold. If that publish is lost, the hold expires within `HOLD_S` and readers fill
the key from PostgreSQL, which by then has the change. A fill never replaces a hold or a newer
version, so a reader that read PostgreSQL just before a change cannot put the old state back.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.retry import Retry

from commands.identity import SessionAccess, UserAccess
from domain.identity import Role

log = logging.getLogger(__name__)

HELD = b"held"
HOLD_S = 30
"""How long a hold lasts if its writer never publishes (longer than an append can take)."""
STATE_TTL_S = 3600
"""Cached states expire (and are read from PostgreSQL again) after this long."""

STORE = """
local current = redis.call('GET', KEYS[1])
if current then
  if current == 'held' then
    if ARGV[4] ~= '1' then return 0 end
  else
    local version = tonumber(string.match(current, '^(%d+)'))
    if version and version >= tonumber(ARGV[1]) then return 0 end
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
return 1
"""
"""KEYS[1] := ARGV[2] (a state of version ARGV[1], kept ARGV[3] seconds), unless the key holds a
newer or equal version, or is held and ARGV[4] is not '1' (only the writer replaces its hold)."""

RELEASE = "if redis.call('GET', KEYS[1]) == 'held' then return redis.call('DEL', KEYS[1]) end return 0"


def user_key(namespace: str, user_id: uuid.UUID) -> str:
    return f"{namespace}:access:user:{user_id.hex}"


def session_key(namespace: str, session_id: uuid.UUID) -> str:
    return f"{namespace}:access:session:{session_id.hex}"


def encode_user(state: UserAccess) -> bytes:
    return f"{state.version} {state.epoch} {','.join(sorted(state.roles))}".encode()


def decode_user(user_id: uuid.UUID, raw: bytes | None) -> UserAccess | None:
    """None for a missing or held key (read PostgreSQL instead)."""
    if raw is None or raw == HELD:
        return None
    version, epoch, roles = raw.decode().split(" ")
    return UserAccess(user_id, int(version), int(epoch), frozenset(Role(r) for r in roles.split(",") if r))


def encode_session(state: SessionAccess) -> bytes:
    return f"{state.version} {state.user_id.hex} {state.epoch} {int(state.ended)}".encode()


def decode_session(session_id: uuid.UUID, raw: bytes | None) -> SessionAccess | None:
    if raw is None or raw == HELD:
        return None
    version, user, epoch, ended = raw.decode().split(" ")
    return SessionAccess(session_id, int(version), uuid.UUID(hex=user), int(epoch), ended == "1")


def key_of(namespace: str, state: UserAccess | SessionAccess) -> str:
    if isinstance(state, UserAccess):
        return user_key(namespace, state.user_id)
    return session_key(namespace, state.session_id)


def store_args(state: UserAccess | SessionAccess, *, replace_hold: bool) -> list[Any]:
    """The arguments of `STORE` for one state."""
    encoded = encode_user(state) if isinstance(state, UserAccess) else encode_session(state)
    return [state.version, encoded, STATE_TTL_S, int(replace_hold)]


class RedisAccessStates:
    """The write side's end (synchronous: commands run in worker threads). Implements
    `commands.identity.AccessStates`."""

    def __init__(self, redis_url: str, namespace: str) -> None:
        self.namespace = namespace
        # Fails fast: a command waits at most a few seconds for Redis before it is refused.
        self.redis = redis.Redis.from_url(
            redis_url, socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 1)
        )
        self._store: Script = self.redis.register_script(STORE)
        self._release: Script = self.redis.register_script(RELEASE)

    def _keys(self, users: Sequence[uuid.UUID], sessions: Sequence[uuid.UUID]) -> list[str]:
        return [user_key(self.namespace, u) for u in users] + [session_key(self.namespace, s) for s in sessions]

    def hold(self, users: Sequence[uuid.UUID], sessions: Sequence[uuid.UUID]) -> None:
        """Raises a redis error if Redis cannot take the hold: the caller must then not append."""
        with self.redis.pipeline(transaction=False) as pipe:
            for key in self._keys(users, sessions):
                pipe.set(key, HELD, ex=HOLD_S)
            pipe.execute()

    def release(self, users: Sequence[uuid.UUID], sessions: Sequence[uuid.UUID]) -> None:
        """After a command that stored nothing; a release that fails leaves the hold to expire."""
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                for key in self._keys(users, sessions):
                    self._release(keys=[key], client=pipe)
                pipe.execute()
        except redis.RedisError as e:
            log.warning("could not release access states (they expire in %d s): %s", HOLD_S, e)

    def publish(self, users: Sequence[UserAccess], sessions: Sequence[SessionAccess]) -> None:
        self._put([*users, *sessions], replace_hold=True)

    def fill(self, users: Sequence[UserAccess], sessions: Sequence[SessionAccess]) -> None:
        self._put([*users, *sessions], replace_hold=False)

    def _put(self, states: Sequence[UserAccess | SessionAccess], *, replace_hold: bool) -> None:
        """A lost publish is safe (the hold expires, readers then read PostgreSQL): it is logged."""
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                for state in states:
                    args = store_args(state, replace_hold=replace_hold)
                    self._store(keys=[key_of(self.namespace, state)], args=args, client=pipe)
                pipe.execute()
        except redis.RedisError as e:
            log.warning("could not publish access states (held ones expire in %d s): %s", HOLD_S, e)

    def close(self) -> None:
        self.redis.close()

"""Reading back what an Idempotency-Key recorded (the recorder writes it with the events), and
forgetting keys older than their time to live (`CHRONICLE_IDEMPOTENCY_KEY_TTL_S`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

from infra.eventstore.recorder import EventStoreDatabase


class IdempotencyKey(Protocol):
    @property
    def scope(self) -> str: ...

    @property
    def key(self) -> str: ...


@dataclass(frozen=True)
class RecordedResponse:
    request_hash: bytes
    status: int
    aggregate_id: uuid.UUID
    version: int
    position: int


# One statement: the key's row if it is live; an expired row is deleted (so that the command's own
# append can record the key anew) and not returned.
_FIND = (
    "WITH expired AS (DELETE FROM idempotency_keys WHERE scope = %(scope)s AND key = %(key)s"
    " AND created_at < now() - make_interval(secs => %(ttl)s)) "
    "SELECT request_hash, status, aggregate_id, version, position FROM idempotency_keys"
    " WHERE scope = %(scope)s AND key = %(key)s AND created_at >= now() - make_interval(secs => %(ttl)s)"
)


class IdempotencyKeys:
    def __init__(self, database: EventStoreDatabase, ttl_s: int = 24 * 3600) -> None:
        self.database = database
        self.ttl_s = ttl_s

    def find(self, scope: str, key: str) -> RecordedResponse | None:
        """The response recorded under a live key; a key older than the time to live is forgotten."""
        with self.database.connection() as conn:
            row = conn.execute(_FIND, {"scope": scope, "key": key, "ttl": self.ttl_s}).fetchone()
        return None if row is None else RecordedResponse(bytes(row[0]), row[1], row[2], row[3], row[4])

    def purge_expired(self, batch: int = 10_000) -> int:
        """Deletes up to `batch` expired keys; returns how many (the API calls it now and then)."""
        with self.database.connection() as conn:
            cur = conn.execute(
                "DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(SELECT ctid FROM idempotency_keys"
                " WHERE created_at < now() - make_interval(secs => %s) LIMIT %s))",
                (self.ttl_s, batch),
            )
            return cur.rowcount

    def recorded(self, key: IdempotencyKey) -> bool:
        return self.find(key.scope, key.key) is not None

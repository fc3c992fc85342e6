"""Reading back what an Idempotency-Key recorded (the recorder writes it with the events)."""

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


class IdempotencyKeys:
    def __init__(self, database: EventStoreDatabase) -> None:
        self.database = database

    def find(self, scope: str, key: str) -> RecordedResponse | None:
        with self.database.connection() as conn:
            row = conn.execute(
                "SELECT request_hash, status, aggregate_id, version, position FROM idempotency_keys"
                " WHERE scope = %s AND key = %s",
                (scope, key),
            ).fetchone()
        return None if row is None else RecordedResponse(bytes(row[0]), row[1], row[2], row[3], row[4])

    def recorded(self, key: IdempotencyKey) -> bool:
        return self.find(key.scope, key.key) is not None

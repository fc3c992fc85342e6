"""Personal data in events, encrypted per data subject, so that it can be erased by destroying a key
(crypto-shredding) while the events, their hashes and seals stay as they were.

An event class lists its personal fields in `personal_data` (domain.identity, domain.ordering):
each field with the event field that names its subject (a user). Such a field is stored as a token,
`{"_personal_": "<subject id>", "_sealed_": "<base64: nonce, AES-GCM ciphertext>"}`, encrypted with
the subject's key from `subject_keys` (a table apart from `events`). Hashes and seals cover the
token. The token is what leaves the store (JetStream, Redis never see the plain value); those who
need the value open it with the key: the write side's mapper, SQL projections (`reveal`) and the
auditors' reads. Once the key is destroyed, a token opens to `None` (and auditors see `erased: true`).
"""

from __future__ import annotations

import base64
import os
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

import msgspec
import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, StoredEvent

from domain.errors import Conflict

SUBJECT, SEALED = "_personal_", "_sealed_"
KEY_TTL_S = 2.0
"""How long a process trusts a key it read: after an erasure, other processes stop opening that
subject's tokens within this long."""
_CREATE = (
    "WITH made AS (INSERT INTO subject_keys (subject_id, key) VALUES (%s, %s) ON CONFLICT (subject_id) DO NOTHING"
    " RETURNING key) SELECT key FROM made UNION ALL SELECT key FROM subject_keys WHERE subject_id = %s"
)


class SubjectErased(Conflict):
    """New personal data for a subject whose key was destroyed."""


def is_token(value: Any) -> bool:
    return type(value) is dict and SUBJECT in value and SEALED in value


def _aad(subject: str, field: str) -> bytes:
    return f"{subject}|{field}".encode()


def seal_value(key: bytes, subject: str, field: str, value: Any) -> dict[str, str]:
    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, msgspec.json.encode(value), _aad(subject, field))
    return {SUBJECT: subject, SEALED: base64.b64encode(nonce + sealed).decode()}


def open_value(key: bytes | None, token: dict[str, str], field: str) -> tuple[Any, bool]:
    """The plain value and False, or (None, True) when the key is gone (erased)."""
    if key is None:
        return None, True
    raw = base64.b64decode(token[SEALED])
    try:
        plain = AESGCM(key).decrypt(raw[:12], raw[12:], _aad(token[SUBJECT], field))
    except InvalidTag:
        raise ValueError(f"the personal data in field {field!r} does not open with its subject's key") from None
    return msgspec.json.decode(plain), False


class SubjectKeys:
    """The subjects' keys (sync, for the write side), cached for `KEY_TTL_S`."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection  # EventStoreDatabase.connection
        self._cache: dict[str, tuple[float, bytes | None]] = {}
        self._lock = threading.Lock()

    def _cached(self, subject: str) -> tuple[bool, bytes | None]:
        with self._lock:
            hit = self._cache.get(subject)
        if hit is not None and time.monotonic() - hit[0] < KEY_TTL_S:
            return True, hit[1]
        return False, None

    def _remember(self, subject: str, key: bytes | None) -> None:
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[subject] = (time.monotonic(), key)

    def key_for(self, subject: str) -> bytes:
        """The subject's key, made on first use; SubjectErased if it was destroyed."""
        found, key = self._cached(subject)
        if not found or key is None:
            with self._connection() as conn:
                row = conn.execute(_CREATE, (subject, AESGCM.generate_key(256), subject)).fetchone()
            key = None if row is None or row[0] is None else bytes(row[0])
            self._remember(subject, key)
        if key is None:
            raise SubjectErased("this person's data has been erased; nothing more can be recorded about them")
        return key

    def key_of(self, subject: str) -> bytes | None:
        found, key = self._cached(subject)
        if not found:
            with self._connection() as conn:
                row = conn.execute("SELECT key FROM subject_keys WHERE subject_id = %s", (subject,)).fetchone()
            key = None if row is None or row[0] is None else bytes(row[0])
            self._remember(subject, key)
        return key

    def erase(self, subject: uuid.UUID) -> None:
        """Destroys the subject's key for good (a row without a key stays, so none is made again),
        and vacuums the table so the key's old row version leaves the data files too."""
        with self._connection() as conn:
            conn.execute(
                "INSERT INTO subject_keys (subject_id, key, erased_at) VALUES (%s, NULL, now())"
                " ON CONFLICT (subject_id) DO UPDATE SET key = NULL, erased_at = coalesce(subject_keys.erased_at, now())",
                (subject,),
            )
            conn.execute("VACUUM subject_keys")
        self._remember(str(subject), None)


class PersonalDataMapper(Mapper[uuid.UUID]):
    """The library's mapper, sealing each event's personal fields on the way in and opening them on
    the way out (None once erased)."""

    keys: SubjectKeys

    def to_stored_event(self, domain_event: DomainEventProtocol[uuid.UUID]) -> StoredEvent:
        personal: dict[str, str] | None = getattr(type(domain_event), "personal_data", None)
        if personal:
            values = dict(vars(domain_event))
            for field, subject_field in personal.items():
                value, subject = values.get(field), values.get(subject_field)
                if value is not None and subject is not None:
                    values[field] = seal_value(self.keys.key_for(str(subject)), str(subject), field, value)
            sealed = object.__new__(type(domain_event))
            object.__setattr__(sealed, "__dict__", values)
            domain_event = sealed
        return super().to_stored_event(domain_event)

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[uuid.UUID]:
        event = super().to_domain_event(stored_event)
        if getattr(type(event), "personal_data", None):
            values = vars(event)
            for field, value in values.items():
                if is_token(value):
                    values[field] = open_value(self.keys.key_of(value[SUBJECT]), value, field)[0]
        return event

    def erased_in(self, stored_events: Iterable[StoredEvent]) -> bool:
        """Whether any of these stored events holds personal data whose subject was erased."""
        for stored in stored_events:
            if SUBJECT.encode() in stored.state:
                data: dict[str, Any] = msgspec.json.decode(stored.state)
                if any(is_token(v) and self.keys.key_of(v[SUBJECT]) is None for v in data.values()):
                    return True
        return False


async def reveal(conn: psycopg.AsyncConnection[Any], datas: Iterable[dict[str, Any]]) -> list[bool]:
    """Opens the personal tokens of each event data in place (one query for all their subjects);
    for each, whether any of its tokens stays shut (its subject erased: the field becomes None)."""
    datas = list(datas)
    subjects = {v[SUBJECT] for data in datas for v in data.values() if is_token(v)}
    if not subjects:
        return [False] * len(datas)
    rows = await (
        await conn.execute(
            "SELECT subject_id::text, key FROM subject_keys WHERE subject_id = ANY(%s::uuid[]) AND key IS NOT NULL",
            (list(subjects),),
        )
    ).fetchall()
    keys = {r[0]: bytes(r[1]) for r in rows}
    erased = []
    for data in datas:
        shut = False
        for field, value in data.items():
            if is_token(value):
                data[field], gone = open_value(keys.get(value[SUBJECT]), value, field)
                shut = shut or gone
        erased.append(shut)
    return erased

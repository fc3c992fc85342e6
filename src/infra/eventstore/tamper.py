"""Tamper evidence: each event's hash, computed by its writer, and seals over the log in order.

An event's hash covers everything stored about it but its position (which the database assigns):
event id, stream, version, topic, type, data, time, actor, command, correlation and causation.
Its place in the order is covered by the seals: each seal holds the Merkle root over its events'
positions and hashes, in order, and the hash of the seal before it, so editing, deleting,
inserting, moving or reordering an event, or altering a seal, breaks something `verify`
recomputes. Each seal is signed (infra.eventstore.signing) by a key outside the database, so
recomputing all of that does not pass either.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
GENESIS = bytes(32)
_encoder = msgspec.json.Encoder()


def micros(at: datetime) -> int:
    return (at - EPOCH) // timedelta(microseconds=1)


def event_hash(
    event_id: UUID,
    stream_id: UUID | str,
    version: int,
    topic: str,
    type_: str,
    data: bytes,
    recorded_at: datetime,
    actor_id: str | None,
    command: str | None,
    correlation_id: UUID | None,
    causation_id: UUID | None,
) -> bytes:
    canonical = _encoder.encode(
        [
            str(event_id),
            str(stream_id),
            version,
            topic,
            type_,
            data.hex(),
            micros(recorded_at),
            actor_id,
            command,
            None if correlation_id is None else str(correlation_id),
            None if causation_id is None else str(causation_id),
        ]
    )
    return hashlib.sha256(canonical).digest()


def leaf(position: int, hash_: bytes) -> bytes:
    """An event's leaf in its seal's tree: its hash bound to its position (which the writer could
    not know, so its own hash cannot cover it)."""
    return hashlib.sha256(b"\x00" + position.to_bytes(8, "big", signed=True) + hash_).digest()


def merkle_root(leaves: Sequence[tuple[int, bytes]]) -> bytes:
    """The root of a binary Merkle tree over the (position, hash) leaves in order (an odd last node
    is carried up)."""
    if not leaves:
        return GENESIS
    level = [leaf(p, h) for p, h in leaves]
    while len(level) > 1:
        paired = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def seal_hash(seq: int, from_position: int, to_position: int, count: int, root: bytes, previous: bytes) -> bytes:
    return hashlib.sha256(b"%d|%d|%d|%d|" % (seq, from_position, to_position, count) + root + previous).digest()


def hash_of_row(row: Sequence[Any]) -> bytes:
    """The hash of a row of (event_id, stream_id, version, topic, type, data, recorded_at, actor_id,
    command, correlation_id, causation_id), as stored."""
    event_id, stream_id, version, topic, type_, data, recorded_at, actor, command, corr, cause = row
    return event_hash(event_id, stream_id, version, topic, type_, bytes(data), recorded_at, actor, command, corr, cause)

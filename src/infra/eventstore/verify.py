"""`chronicle audit verify`: recomputes every event's hash and every seal, in order, and reports the
first place where the stored log is not what was written. Streams seal by seal: bounded memory."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import psycopg

from infra.eventstore.envelope import LOG_COLUMNS
from infra.eventstore.tamper import GENESIS, hash_of_row, merkle_root, seal_hash

_EVENTS = f"SELECT {LOG_COLUMNS}, hash FROM events WHERE notification_id > %s{{upto}} ORDER BY notification_id"


class Breach(msgspec.Struct, omit_defaults=True):
    kind: str
    detail: str
    position: str | None = None
    event_id: str | None = None
    seal: int | None = None


class Verification(msgspec.Struct):
    ok: bool
    events_checked: int
    seals_checked: int
    sealed_through: str
    unsealed_events: int
    first_problem: Breach | None = None


@dataclass
class _Seal:
    seq: int
    from_position: int
    to_position: int
    event_count: int
    merkle_root: bytes
    previous_hash: bytes
    seal_hash: bytes


def _events(
    conn: psycopg.Connection[Any], after: int, upto: int | None, batch: int = 2000
) -> Iterator[tuple[Any, ...]]:
    sql = _EVENTS.format(upto=" AND notification_id <= %s" if upto is not None else "")
    params: tuple[Any, ...] = (after, upto) if upto is not None else (after,)
    with conn.transaction(), conn.cursor(name="chronicle_verify") as cursor:
        cursor.itersize = batch
        cursor.execute(sql.encode(), params)
        yield from cursor


def verify(database_url: str) -> Verification:
    checked = seals_checked = 0
    previous, sealed_to = GENESIS, 0
    with psycopg.connect(database_url) as conn, psycopg.connect(database_url) as reader:
        for seq, from_p, to_p, count, root, prev, digest in conn.execute(
            "SELECT seq, from_position, to_position, event_count, merkle_root, previous_hash, seal_hash"
            " FROM seals ORDER BY seq"
        ):
            seal = _Seal(seq, from_p, to_p, count, bytes(root), bytes(prev), bytes(digest))
            problem = _check_seal(seal, seals_checked + 1, sealed_to, previous)
            hashes: list[bytes] = []
            if problem is None:
                for row in _events(reader, seal.from_position, seal.to_position):
                    checked += 1
                    problem = _check_event(row)
                    if problem is not None:
                        problem.seal = seal.seq
                        break
                    hashes.append(bytes(row[-1]))
            if problem is None:
                problem = _check_range(seal, hashes)
            if problem is not None:
                return Verification(False, checked, seals_checked, str(sealed_to), 0, problem)
            seals_checked += 1
            previous, sealed_to = seal.seal_hash, seal.to_position
        unsealed = 0
        for row in _events(reader, sealed_to, None):
            checked += 1
            unsealed += 1
            problem = _check_event(row)
            if problem is not None:
                return Verification(False, checked, seals_checked, str(sealed_to), unsealed, problem)
    return Verification(True, checked, seals_checked, str(sealed_to), unsealed)


def _check_seal(seal: _Seal, expected_seq: int, sealed_to: int, previous: bytes) -> Breach | None:
    if seal.seq != expected_seq:
        return Breach("seal_missing", f"seal {expected_seq} is missing (next is {seal.seq})", seal=expected_seq)
    if seal.from_position != sealed_to or seal.previous_hash != previous:
        return Breach(
            "seal_altered",
            f"seal {seal.seq} does not chain to seal {seal.seq - 1}",
            seal=seal.seq,
            position=str(seal.from_position),
        )
    recomputed = seal_hash(
        seal.seq, seal.from_position, seal.to_position, seal.event_count, seal.merkle_root, seal.previous_hash
    )
    if recomputed != seal.seal_hash:
        return Breach(
            "seal_altered",
            f"seal {seal.seq} was altered (its hash does not match its content)",
            seal=seal.seq,
            position=str(seal.to_position),
        )
    return None


def _check_event(row: tuple[Any, ...]) -> Breach | None:
    stored = row[-1]
    if stored is None or hash_of_row(row[1:-1]) != bytes(stored):
        return Breach(
            "event_altered",
            f"event {row[1]} at position {row[0]} does not match its hash "
            "(its content was changed after it was written)",
            position=str(row[0]),
            event_id=str(row[1]),
        )
    return None


def _check_range(seal: _Seal, hashes: list[bytes]) -> Breach | None:
    where = f"positions after {seal.from_position} up to {seal.to_position}"
    if len(hashes) < seal.event_count:
        return Breach(
            "event_missing",
            f"{seal.event_count - len(hashes)} event(s) missing from seal {seal.seq} ({where})",
            seal=seal.seq,
            position=str(seal.from_position),
        )
    if len(hashes) > seal.event_count:
        return Breach(
            "event_inserted",
            f"{len(hashes) - seal.event_count} event(s) added inside seal {seal.seq} ({where})",
            seal=seal.seq,
            position=str(seal.from_position),
        )
    if merkle_root(hashes) != seal.merkle_root:
        return Breach(
            "order_changed",
            f"the events of seal {seal.seq} ({where}) were reordered or replaced",
            seal=seal.seq,
            position=str(seal.from_position),
        )
    return None

"""`chronicle audit verify`: recomputes every event's hash and every seal, in order, checks each
seal's signature against the trusted seal keys, and compares the newest seal with the heads kept
outside the database (the JetStream anchor stream, an auditor's `head.json`). Reports the first
place where the stored log is not what was written. Streams seal by seal: bounded memory.

`check_log` is the whole check over rows from anywhere; `verify` feeds it from PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import psycopg

from infra.eventstore.envelope import LOG_COLUMNS
from infra.eventstore.signing import SealHead, head_of, signature_valid
from infra.eventstore.tamper import GENESIS, hash_of_row, merkle_root, seal_hash

_EVENTS = f"SELECT {LOG_COLUMNS}, hash FROM events WHERE notification_id > %s{{upto}} ORDER BY notification_id"
SEAL_COLUMNS = (
    "seq, from_position, to_position, event_count, merkle_root, previous_hash, seal_hash, public_key, signature"
)


class Breach(msgspec.Struct, omit_defaults=True):
    kind: str
    detail: str
    position: str | None = None
    event_id: str | None = None
    seal: int | None = None


class SnapshotFinding(msgspec.Struct):
    stream_id: str
    version: int
    detail: str


class Verification(msgspec.Struct):
    ok: bool
    events_checked: int
    seals_checked: int
    sealed_through: str
    unsealed_events: int
    heads_checked: list[str] = msgspec.field(default_factory=list)
    """Which external heads the newest seals were compared with (`jetstream seal 12`, …)."""
    notes: list[str] = msgspec.field(default_factory=list)
    """What could not be checked (e.g. JetStream unreachable), which does not make `ok` false."""
    ignored_snapshots: list[SnapshotFinding] = msgspec.field(default_factory=list)
    """Snapshots that disagree with a replay of their stream: never used, and reported here."""
    first_problem: Breach | None = None

    def add_snapshot_findings(self, found: Sequence[Any]) -> None:
        """Folds in what checking every snapshot found (`commands.snapshots.IgnoredSnapshot`s)."""
        self.ignored_snapshots = [SnapshotFinding(str(f.stream_id), f.version, f.detail) for f in found]
        if found and self.ok:
            first = found[0]
            self.ok = False
            self.first_problem = Breach(
                "snapshot_ignored",
                f"the snapshot of stream {first.stream_id} at version {first.version} disagrees with a replay of its"
                f" events ({first.detail}); it is ignored",
            )


@dataclass(frozen=True)
class ExternalHead:
    """A head kept outside the database, and where it came from (`jetstream`, a file name)."""

    source: str
    head: SealHead


@dataclass
class _Seal:
    seq: int
    from_position: int
    to_position: int
    event_count: int
    merkle_root: bytes
    previous_hash: bytes
    seal_hash: bytes
    public_key: bytes
    signature: bytes

    @classmethod
    def of(cls, row: Sequence[Any]) -> _Seal:
        seq, from_p, to_p, count, *digests = row
        return cls(int(seq), int(from_p), int(to_p), int(count), *(bytes(d) for d in digests))

    def head(self) -> SealHead:
        return head_of(*(getattr(self, f) for f in self.__dataclass_fields__))


EventsIn = Callable[[int, int | None], Iterable[Sequence[Any]]]
"""Rows of (LOG_COLUMNS…, hash) after a position, up to another (None: to the end), in order."""


def check_log(
    seals: Iterable[Sequence[Any]], events_in: EventsIn, trusted_keys: Collection[bytes], heads: Sequence[ExternalHead]
) -> Verification:
    checked = seals_checked = 0
    previous, sealed_to = GENESIS, 0
    trusted = set(trusted_keys)
    for external in heads:
        problem = _check_head(external, trusted)
        if problem is not None:
            return Verification(False, 0, 0, "0", 0, first_problem=problem)
    wanted = {external.head.seq: external for external in heads}
    found: dict[int, SealHead] = {}
    for row in seals:
        seal = _Seal.of(row)
        problem = _check_seal(seal, seals_checked + 1, sealed_to, previous, trusted)
        leaves: list[tuple[int, bytes]] = []
        if problem is None:
            for event in events_in(seal.from_position, seal.to_position):
                checked += 1
                problem = _check_event(event)
                if problem is not None:
                    problem.seal = seal.seq
                    break
                leaves.append((int(event[0]), bytes(event[-1])))
        if problem is None:
            problem = _check_range(seal, leaves)
        if problem is not None:
            return Verification(False, checked, seals_checked, str(sealed_to), 0, first_problem=problem)
        seals_checked += 1
        previous, sealed_to = seal.seal_hash, seal.to_position
        if seal.seq in wanted:
            found[seal.seq] = seal.head()
    unsealed = 0
    for event in events_in(sealed_to, None):
        checked += 1
        unsealed += 1
        problem = _check_event(event)
        if problem is not None:
            return Verification(False, checked, seals_checked, str(sealed_to), unsealed, first_problem=problem)
    report = Verification(True, checked, seals_checked, str(sealed_to), unsealed)
    for external in heads:
        report.heads_checked.append(f"{external.source} seal {external.head.seq}")
        problem = _compare_head(external, found.get(external.head.seq), seals_checked, sealed_to)
        if problem is not None:
            report.ok, report.first_problem = False, problem
            return report
    return report


def verify(database_url: str, trusted_keys: Collection[bytes], heads: Sequence[ExternalHead] = ()) -> Verification:
    with psycopg.connect(database_url) as conn, psycopg.connect(database_url) as reader:
        seals = conn.execute(f"SELECT {SEAL_COLUMNS} FROM seals ORDER BY seq")
        return check_log(seals, lambda after, upto: _events(reader, after, upto), trusted_keys, heads)


def _events(
    conn: psycopg.Connection[Any], after: int, upto: int | None, batch: int = 2000
) -> Iterator[tuple[Any, ...]]:
    sql = _EVENTS.format(upto=" AND notification_id <= %s" if upto is not None else "")
    params: tuple[Any, ...] = (after, upto) if upto is not None else (after,)
    with conn.transaction(), conn.cursor(name="chronicle_verify") as cursor:
        cursor.itersize = batch
        cursor.execute(sql.encode(), params)
        yield from cursor


def _check_head(external: ExternalHead, trusted: set[bytes]) -> Breach | None:
    head = external.head
    try:
        key, digest, signature = (bytes.fromhex(v) for v in (head.public_key, head.seal_hash, head.signature))
    except ValueError:
        key = digest = signature = b""
    if key not in trusted:
        return Breach("head_forged", f"the {external.source} head is not signed by a trusted seal key", seal=head.seq)
    if not signature_valid(key, digest, signature):
        return Breach("head_forged", f"the {external.source} head's signature does not match it", seal=head.seq)
    return None


def _compare_head(external: ExternalHead, stored: SealHead | None, last_seq: int, sealed_to: int) -> Breach | None:
    head = external.head
    if stored is None:
        return Breach(
            "tail_cut",
            f"the {external.source} head is seal {head.seq} (through position {head.to_position}), but the log's"
            f" seals end at seal {last_seq} (position {sealed_to}): events and seals were removed from its end",
            seal=head.seq,
            position=str(sealed_to),
        )
    if stored != head:
        return Breach(
            "head_mismatch",
            f"seal {head.seq} in the database differs from the {external.source} head of that seal",
            seal=head.seq,
            position=stored.to_position,
        )
    return None


def _check_seal(seal: _Seal, expected_seq: int, sealed_to: int, previous: bytes, trusted: set[bytes]) -> Breach | None:
    where = f"positions after {seal.from_position} up to {seal.to_position}"
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
    if seal.public_key not in trusted:
        return Breach(
            "seal_forged",
            f"seal {seal.seq} ({where}) is signed by a key that is not a trusted seal key",
            seal=seal.seq,
            position=str(seal.from_position),
        )
    if not signature_valid(seal.public_key, seal.seal_hash, seal.signature):
        return Breach(
            "signature_invalid",
            f"seal {seal.seq}'s signature does not match it: the seal, or an event in it ({where}),"
            " was rewritten after it was signed",
            seal=seal.seq,
            position=str(seal.from_position),
        )
    return None


def _check_event(row: Sequence[Any]) -> Breach | None:
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


def _check_range(seal: _Seal, leaves: list[tuple[int, bytes]]) -> Breach | None:
    where = f"positions after {seal.from_position} up to {seal.to_position}"
    if len(leaves) < seal.event_count:
        return Breach(
            "event_missing",
            f"{seal.event_count - len(leaves)} event(s) missing from seal {seal.seq} ({where})",
            seal=seal.seq,
            position=str(seal.from_position),
        )
    if len(leaves) > seal.event_count:
        return Breach(
            "event_inserted",
            f"{len(leaves) - seal.event_count} event(s) added inside seal {seal.seq} ({where})",
            seal=seal.seq,
            position=str(seal.from_position),
        )
    if merkle_root(leaves) != seal.merkle_root:
        return Breach(
            "order_changed",
            f"the events of seal {seal.seq} ({where}) were moved, reordered or replaced",
            seal=seal.seq,
            position=str(seal.from_position),
        )
    return None

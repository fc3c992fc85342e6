"""Any single-byte change to any stored event, seal or kept head is detected by `check_log`, the
whole of `chronicle audit verify` over rows (tests/integration/test_tamper_evidence.py runs it
against PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from infra.eventstore.signing import MalformedHead, SealKey, encode_head, head_of, parse_head
from infra.eventstore.tamper import EPOCH, GENESIS, hash_of_row, merkle_root, micros, seal_hash
from infra.eventstore.verify import ExternalHead, Verification, check_log

KEY = SealKey.generate()
Row = list[Any]


def build_log(events: int = 11, per_seal: int = 4) -> tuple[list[Row], list[Row]]:
    """A log of events from a few appends (adjacent positions within one, gaps between), every one
    sealed, in seals of `per_seal` events."""
    rows: list[Row] = []
    start = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    for i in range(events):
        position = ((1000 + i // 3) << 20) + i % 3
        row: Row = [
            position,
            uuid.UUID(int=0x0190_0000_0000_7000_8000_0000_0000_0000 + i),
            uuid.UUID(int=0xABC0 + i % 2),
            i // 2 + 1,
            "domain.work:Task.Edited",
            "Task.Edited",
            b'{"title":"Write the report %d"}' % i,
            start + timedelta(milliseconds=i),
            "0f8c3a52-6a0b-4e1f-a7d2-0c5b8e4f1a11",
            "tasks.edit",
            uuid.UUID(int=0x55 + i),
            None if i % 2 else uuid.UUID(int=0x77 + i),
        ]
        rows.append([*row, hash_of_row(row[1:])])
    seals: list[Row] = []
    previous, sealed_to = GENESIS, 0
    for seq, first in enumerate(range(0, events, per_seal), start=1):
        chunk = rows[first : first + per_seal]
        leaves = [(r[0], r[-1]) for r in chunk]
        root = merkle_root(leaves)
        digest = seal_hash(seq, sealed_to, chunk[-1][0], len(chunk), root, previous)
        seals.append([seq, sealed_to, chunk[-1][0], len(chunk), root, previous, digest, KEY.public, KEY.sign(digest)])
        previous, sealed_to = digest, chunk[-1][0]
    return rows, seals


def run(rows: Sequence[Row], seals: Sequence[Row], heads: Sequence[ExternalHead] = ()) -> Verification:
    ordered = sorted(rows, key=lambda r: r[0])

    def events_in(after: int, upto: int | None) -> list[Row]:
        return [r for r in ordered if r[0] > after and (upto is None or r[0] <= upto)]

    return check_log(sorted(seals, key=lambda s: s[0]), events_in, [KEY.public], heads)


def change_byte(value: Any, index: int, new: int) -> Any:
    """`value` with one byte of its stored form changed (text stays valid text)."""
    if isinstance(value, bytes):
        raw = bytearray(value)
        i = index % len(raw)
        assume(raw[i] != new)
        raw[i] = new
        return bytes(raw)
    if isinstance(value, str):
        raw = bytearray(value.encode())
        i, printable = index % len(raw), 0x20 + new % 0x5F
        assume(raw[i] != printable)
        raw[i] = printable
        return raw.decode()
    if isinstance(value, uuid.UUID):
        return uuid.UUID(bytes=change_byte(value.bytes, index, new))
    if isinstance(value, datetime):
        changed = int.from_bytes(change_byte(micros(value).to_bytes(8, "big", signed=True), index % 6 + 2, new), "big")
        return EPOCH + timedelta(microseconds=changed)
    if isinstance(value, int):
        return int.from_bytes(change_byte(value.to_bytes(8, "big", signed=True), index, new), "big", signed=True)
    raise AssertionError(f"no stored form for {value!r}")


def test_an_untouched_log_and_its_head_verify_clean() -> None:
    rows, seals = build_log()
    head = ExternalHead("head.json", parse_head(encode_head(head_of(*seals[-1])) + b"\n"))
    report = run(rows, seals, [head])
    assert report.ok and report.seals_checked == len(seals) and report.events_checked == len(rows)


@settings(max_examples=300, deadline=None)
@given(
    table=st.sampled_from(["events", "seals"]),
    which=st.integers(0, 100),
    column=st.integers(0, 100),
    index=st.integers(0, 10_000),
    new=st.integers(0, 255),
)
def test_any_single_byte_change_to_a_stored_event_or_seal_is_detected(
    table: str, which: int, column: int, index: int, new: int
) -> None:
    rows, seals = build_log()
    target = (rows if table == "events" else seals)[which % (len(rows) if table == "events" else len(seals))]
    columns = [i for i, v in enumerate(target) if v is not None]
    c = columns[column % len(columns)]
    before = target[c]
    target[c] = change_byte(before, index, new)
    assume(target[c] != before)
    keys = [r[0] for r in rows] if table == "events" else [s[0] for s in seals]
    assume(len(set(keys)) == len(keys))  # a duplicate position or seq is refused by its primary key
    if table == "events" and c == 1:
        assume(len({r[1] for r in rows}) == len(rows))  # event ids are unique too
    assert not run(rows, seals).ok


@settings(max_examples=300, deadline=None)
@given(index=st.integers(0, 10_000), new=st.integers(0, 255))
def test_any_single_byte_change_to_a_kept_head_is_detected(index: int, new: int) -> None:
    rows, seals = build_log()
    raw = bytearray(encode_head(head_of(*seals[-1])) + b"\n")
    i = index % len(raw)
    assume(raw[i] != new)
    raw[i] = new
    try:
        head = parse_head(bytes(raw))
    except MalformedHead:
        return
    assert not run(rows, seals, [ExternalHead("head.json", head)]).ok


def test_a_head_beyond_the_stored_seals_reports_a_cut_tail() -> None:
    rows, seals = build_log()
    head = ExternalHead("jetstream", head_of(*seals[-1]))
    report = run(rows[:-5], seals[:-2], [head])
    assert report.first_problem is not None and report.first_problem.kind == "tail_cut"


@pytest.mark.parametrize("column", ["public_key", "signature"])
def test_a_seal_signed_by_another_key_or_not_by_its_key_is_detected(column: str) -> None:
    rows, seals = build_log()
    other = SealKey.generate()
    if column == "public_key":
        seals[1][7], seals[1][8] = other.public, other.sign(seals[1][6])
    else:
        seals[1][8] = other.sign(seals[1][6])
    problem = run(rows, seals).first_problem
    assert problem is not None and problem.seal == 2
    assert problem.kind == ("seal_forged" if column == "public_key" else "signature_invalid")

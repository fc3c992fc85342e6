"""Envelope data read from the log is the event's state as plain JSON values, whichever way the
transcoder wrapped them; the fast reader agrees with decoding through the transcoder."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from commands.base import make_transcoder
from infra.eventstore.envelope import REDACTED, EnvelopeReader

values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**12), 10**12),
        st.text(max_size=20),
        st.uuids(),
        st.dates(),
        st.datetimes(timezones=st.just(UTC)),
        st.decimals(allow_nan=False, allow_infinity=False),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text("abcxyz", min_size=1, max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)


def _canonical(value: Any) -> Any:
    """What a reader of the JSON may rely on: the same strings for UUIDs and decimals, and the same
    instants for times and days, however they are spelled."""
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, str):
        for parse in (datetime.fromisoformat, date.fromisoformat):
            try:
                return parse(value.replace("Z", "+00:00")).isoformat()
            except ValueError:
                pass
    return value


@settings(deadline=None)
@given(st.dictionaries(st.text("abcdefgh_", min_size=1, max_size=8), values, max_size=6))
def test_the_fast_reader_agrees_with_the_transcoder(state: dict[str, Any]) -> None:
    transcoder = make_transcoder()
    raw = transcoder.encode(state)
    slow = msgspec.to_builtins(transcoder.decode(raw))
    assert _canonical(EnvelopeReader(transcoder).data(raw)) == _canonical(slow)


def test_ids_times_and_secrets() -> None:
    transcoder = make_transcoder()
    task = uuid.uuid4()
    raw = transcoder.encode(
        {
            "task_id": task,
            "at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
            "due": date(2027, 1, 1),
            "amount": Decimal("1.50"),
            "password_hash": "$argon2id$x",
            "originator_topic": "x:Y",
        }
    )
    data = EnvelopeReader(transcoder).data(raw)
    assert data == {
        "task_id": str(task),
        "at": "2026-01-02T03:04:05+00:00",
        "due": "2027-01-01",
        "amount": "1.50",
        "password_hash": REDACTED,
    }

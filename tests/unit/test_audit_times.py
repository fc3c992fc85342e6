"""A time without a zone means UTC in every audit read (the API's routes, the CLI, the explorer)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from infra.eventstore.audit import LogFilter, parse_time


def test_a_time_without_a_zone_filters_as_utc() -> None:
    _, params = LogFilter(since=datetime(2026, 11, 27, 10, 30), until=parse_time("2026-11-27T11:00")).sql()
    assert params["since"] == datetime(2026, 11, 27, 10, 30, tzinfo=UTC)
    assert params["until"] == datetime(2026, 11, 27, 11, 0, tzinfo=UTC)


def test_a_time_with_a_zone_keeps_it() -> None:
    given = parse_time(" 2026-11-27T12:30+02:00 ")
    assert given.utcoffset() == timedelta(hours=2)
    assert LogFilter(since=given).sql()[1]["since"] == datetime(
        2026, 11, 27, 12, 30, tzinfo=timezone(timedelta(hours=2))
    )

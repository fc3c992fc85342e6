"""`eventually` waits for a condition, within a bound, and says what it waited for when it gives up."""

from __future__ import annotations

import itertools
import time

import pytest

from tests.waiting import eventually


def test_it_returns_the_first_truthy_result() -> None:
    calls = itertools.count(1)
    assert eventually(lambda: [n] if (n := next(calls)) >= 3 else [], what="a third call") == [3]


def test_an_assertion_error_means_not_yet() -> None:
    calls = itertools.count(1)

    def check() -> str:
        n = next(calls)
        assert n >= 3, f"only {n}"
        return "done"

    assert eventually(check, what="a third call") == "done"


def test_giving_up_names_what_it_waited_for_and_the_last_failure() -> None:
    started = time.monotonic()

    def check() -> None:
        raise AssertionError("still 7 behind")

    with pytest.raises(AssertionError, match=r"after 0.3s waiting for the views to catch up; .*still 7 behind"):
        eventually(check, what="the views to catch up", timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 2


def test_giving_up_shows_the_last_falsy_result() -> None:
    with pytest.raises(AssertionError, match=r"waiting for an order; last check gave \{\}"):
        eventually(dict, what="an order", timeout=0.1)


def test_any_other_error_fails_at_once() -> None:
    calls = itertools.count(1)

    def check() -> bool:
        next(calls)
        raise KeyError("boom")

    with pytest.raises(KeyError):
        eventually(check, what="anything", timeout=10)
    assert next(calls) == 2

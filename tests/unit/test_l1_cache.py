"""The API processes' cache of read-model answers (infra.views.l1), against a model of a view, its
projector and the announcement channel, under any interleaving of batches, announcements (lost,
duplicated, late, out of order, a connection dropped), lanes taken afresh, reads that straddle
announcements, and queries with and without `X-Min-Position`, from two workers."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from infra.views.l1 import ALL, L1, Announcement, decode_announcements, encode_announcements

pytestmark = pytest.mark.unit

VIEW = ("board", 1)
KEYS = ["a", "b", "c"]


def token(key: str) -> str:
    return f"board:{key}"


class Worker:
    def __init__(self) -> None:
        self.cache = L1(max_bytes=1 << 20)
        self.cache.found()
        self.inbox: list[Announcement] = []
        self.heard: list[Announcement] = []
        self.reads: list[tuple[int, str, int, int]] = []  # ticket, key, value, position read


class CacheAgainstTheView(RuleBasedStateMachine):
    """The view (`values`, `position`) changes in batches; what a batch touched is announced to
    both workers by the lane (possibly several batches in one announcement, possibly never, when
    the lane is lost before it announces and taken up again). Every answer a worker's cache gives
    must be a value the view held at or after the position the query asked for."""

    @initialize()
    def start(self) -> None:
        self.values = dict.fromkeys(KEYS, 0)
        self.position = 0
        self.history: dict[str, list[tuple[int, int]]] = {k: [(0, 0)] for k in KEYS}  # (position, value)
        self.announced = 0
        self.touched: set[str] = set()
        self.fresh = True
        self.workers = [Worker(), Worker()]
        self.silent_losses = False

    def held(self, key: str, value: int, since: int) -> bool:
        """Whether the view held `value` under `key` at some checkpoint at or after `since`."""
        history = self.history[key]
        for i, (_, held) in enumerate(history):
            until = history[i + 1][0] if i + 1 < len(history) else self.position + 1
            if held == value and until > since:
                return True
        return False

    # -- the projector ---------------------------------------------------------------------------

    @rule(keys=st.sets(st.sampled_from(KEYS), min_size=1), step=st.integers(1, 3))
    def batch(self, keys: set[str], step: int) -> None:
        self.position += step
        for key in keys:
            self.values[key] += 1
            self.history[key].append((self.position, self.values[key]))
        self.touched |= {token(k) for k in keys}

    @rule(too_many=st.booleans())
    def announce(self, too_many: bool) -> None:
        a = Announcement(
            VIEW[0], VIEW[1], self.announced, self.position, ALL if too_many else sorted(self.touched), fresh=self.fresh
        )
        self.announced, self.touched, self.fresh = self.position, set(), False
        a = decode_announcements(encode_announcements([a]))[0]  # as it travels
        for worker in self.workers:
            worker.inbox.append(a)

    @rule()
    def lane_lost_and_taken_again(self) -> None:
        """The leader went away after committing batches it never announced; whoever takes the
        lane up next announces so at once, afresh from the checkpoint."""
        self.announced, self.touched, self.fresh = self.position, set(), True
        self.announce(too_many=False)

    # -- the channel -----------------------------------------------------------------------------

    @rule(w=st.integers(0, 1), data=st.data())
    def deliver(self, w: int, data: st.DataObject) -> None:
        worker = self.workers[w]
        if worker.inbox:
            # Redis delivers in order; a late one is modelled by taking any (never relied on).
            i = data.draw(st.integers(0, len(worker.inbox) - 1))
            a = worker.inbox.pop(i)
            worker.cache.hear(a)
            worker.heard.append(a)

    @rule(w=st.integers(0, 1), data=st.data())
    def duplicate(self, w: int, data: st.DataObject) -> None:
        worker = self.workers[w]
        if worker.heard:
            worker.cache.hear(data.draw(st.sampled_from(worker.heard)))

    @rule(w=st.integers(0, 1))
    def drop_silently(self, w: int) -> None:
        """Not what Redis does without closing the connection; the answers stay within the view's
        history even so (only freshness would suffer)."""
        if self.workers[w].inbox:
            self.workers[w].inbox.pop(0)
            self.silent_losses = True

    @rule(w=st.integers(0, 1))
    def disconnect(self, w: int) -> None:
        worker = self.workers[w]
        worker.cache.lost()
        worker.inbox.clear()  # what was published meanwhile never arrives
        worker.cache.found()

    # -- reads and queries -----------------------------------------------------------------------

    @rule(w=st.integers(0, 1), key=st.sampled_from(KEYS))
    def start_read(self, w: int, key: str) -> None:
        worker = self.workers[w]
        worker.reads.append((worker.cache.ticket(), key, self.values[key], self.position))

    @rule(w=st.integers(0, 1), data=st.data())
    def finish_read(self, w: int, data: st.DataObject) -> None:
        worker = self.workers[w]
        if worker.reads:
            ticket, key, value, position = worker.reads.pop(data.draw(st.integers(0, len(worker.reads) - 1)))
            worker.cache.put(ticket, VIEW, key, value, position, [token(key)], 8)

    @rule(w=st.integers(0, 1), key=st.sampled_from(KEYS), data=st.data())
    def query(self, w: int, key: str, data: st.DataObject) -> None:
        # Mostly the newest position (a client reading its own write), else any.
        min_position = data.draw(st.just(self.position) | st.none() | st.integers(0, self.position))
        entry = self.workers[w].cache.get(VIEW, key, min_position)
        if entry is not None:
            assert self.held(key, entry.value, min_position or 0), (key, entry, min_position, self.history[key])

    @precondition(lambda self: not self.silent_losses)
    @rule()
    def everything_announced_and_heard(self) -> None:
        """Once every batch is announced and heard (nothing lost silently), no cache holds a value
        older than the view's."""
        if self.touched or self.announced != self.position:
            self.announce(too_many=False)
        for worker in self.workers:
            while worker.inbox:
                a = worker.inbox.pop(0)
                worker.cache.hear(a)
                worker.heard.append(a)
            for key in KEYS:
                entry = worker.cache.get(VIEW, key)
                assert entry is None or entry.value == self.values[key], (key, entry, self.values)

    @invariant()
    def within_bounds(self) -> None:
        for worker in getattr(self, "workers", []):
            assert worker.cache.size <= worker.cache.max_bytes


TestCacheAgainstTheView = CacheAgainstTheView.TestCase
TestCacheAgainstTheView.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)


def test_a_read_that_straddles_an_announcement_of_its_key_is_not_kept() -> None:
    cache = L1(max_bytes=1 << 20)
    cache.found()
    ticket = cache.ticket()
    cache.hear(Announcement("board", 1, 0, 5, ["board:a"]))
    assert not cache.put(ticket, VIEW, "a", 1, 4, ["board:a"], 8)
    assert cache.put(ticket, VIEW, "b", 1, 4, ["board:b"], 8)  # another key: kept


def test_nothing_is_kept_or_served_while_the_announcements_are_not_followed() -> None:
    cache = L1(max_bytes=1 << 20)
    assert not cache.put(cache.ticket(), VIEW, "a", 1, 4, ["board:a"], 8)
    cache.found()
    assert cache.put(cache.ticket(), VIEW, "a", 1, 4, ["board:a"], 8)
    cache.lost()
    assert cache.get(VIEW, "a") is None


def test_a_statement_on_a_whole_table_drops_every_entry_on_it() -> None:
    cache = L1(max_bytes=1 << 20)
    cache.found()
    view = ("projects", 1)
    cache.put(cache.ticket(), view, "p1", "x", 3, ["projects:1", "members:1"], 8)
    cache.put(cache.ticket(), view, "u1", "y", 3, ["users:1"], 8)
    cache.hear(Announcement("projects", 1, 0, 4, ["projects:*"]))
    assert cache.get(view, "p1") is None and cache.get(view, "u1") is not None


def test_a_hole_in_a_lanes_announcements_empties_its_view() -> None:
    cache = L1(max_bytes=1 << 20)
    cache.found()
    cache.hear(Announcement("board", 1, 0, 5, []))
    cache.put(cache.ticket(), VIEW, "a", 1, 5, ["board:a"], 8)
    cache.hear(Announcement("board", 1, 7, 9, ["board:z"]))  # 5..7 never heard
    assert cache.get(VIEW, "a") is None


def test_memory_stays_within_the_bound_under_key_spraying() -> None:
    cache = L1(max_bytes=64 * 1024)
    cache.found()
    for i in range(10_000):
        cache.put(cache.ticket(), VIEW, f"k{i}", "v" * 100, 1, [f"board:k{i}"], 100)
        assert cache.size <= cache.max_bytes
    assert cache.stats.evictions > 9_000
    assert len(cache.by_token) == len(cache.entries)  # the indexes shrink with the entries
    assert cache.get(VIEW, "k9999") is not None and cache.get(VIEW, "k0") is None


def test_a_switch_to_a_new_version_lets_go_of_the_old_ones() -> None:
    cache = L1(max_bytes=1 << 20)
    cache.found()
    cache.put(cache.ticket(), ("tasks", 1), "t", "old", 3, ["tasks:t"], 8)
    cache.hear(Announcement("tasks", 1, 3, 4, ["tasks:u"]))
    assert cache.get(("tasks", 1), "t") is not None
    cache.hear(Announcement("tasks", 2, 4, 4, ALL, fresh=True))  # rebuilt and switched
    assert cache.get(("tasks", 1), "t") is None and cache.live["tasks"] == 2

"""L1: an API process's own cache of read-model answers, kept exact by the projectors'
announcements rather than by time.

**What an entry is.** A value read from one view version (a projection and its version) under a
key of the cache's choosing, with the view's *tokens* it depends on (`"tasks:<id>"`, `"board:<id>"`:
what `sql_tokens` and the Redis keys written name for a batch) and the view's checkpoint as read
*with* the value (in the same statement, or read before it). So an entry holds every event up to
its `position`, and a query with `X-Min-Position` is answered from L1 only when that position is
at or below it: read-your-writes never depends on an announcement arriving.

**How it stays exact.** Each projector batch is announced (infra.delivery.checkpoints) with the
tokens its writes touched; hearing it drops every entry depending on one of them. A read that
started before an announcement and is put after it could hold what that announcement dropped: so
a read takes a `ticket` before it starts, and `put` refuses it when any announcement heard since
touched its tokens (a bounded log of recent drops answers that; a ticket older than the log is
refused too). When in doubt the view is emptied, never trusted: on a lane taken afresh (a restart,
a failover, a reset, a rebuild's switch, a flushed Redis: `fresh`), on a hole in a lane's
announcements, on an announcement naming no tokens (too many to name), and on losing the
announcement channel (everything).

**Bounded** by the bytes of its entries' values (as their JSON), least recently used first out.

Single-threaded by design: one event loop per API worker owns it (no locks).
"""

from __future__ import annotations

import heapq
import re
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

ViewId = tuple[str, int]
"""A projection's name and a version of its view."""
ALL = None
"""An announcement's `tokens` when a batch touched too many to name: the whole view."""
MAX_TOKENS = 2048
"""A batch that touched more tokens than this is announced as touching everything."""
LOG_TOKENS = 65_536
"""How many tokens of recent drops `put` can look back over (the log's bound); an older ticket is
refused."""
VALUE_FACTOR = 2
"""Bytes of Python objects per byte of an entry's JSON, rounded up: measured with tracemalloc on
10,000 of each, 1.3 for a task, 2.0 for a project with five members, 1.5 for a product's JSON."""
ENTRY_OVERHEAD = 400
TOKEN_OVERHEAD = 250
"""Bytes charged per entry and per token it depends on, for its bookkeeping and index entries."""


class Announcement(msgspec.Struct, array_like=True, frozen=True):
    """One lane's checkpoint moved from `start` to `end` (its previous announcement's `end`), with
    the tokens its batches touched. `fresh`: the lane was just taken up (at `start`), by this or
    another process: what was cached of the view before may have missed writes."""

    projection: str
    version: int
    start: int
    end: int
    tokens: list[str] | None = ALL
    part: int = -1
    partitions: int = 1
    fresh: bool = False


def channel(namespace: str) -> str:
    """The Redis channel the announcements are published on (`v2`: JSON announcements with the
    tokens touched, unreadable to the API processes of the releases before)."""
    return f"{namespace}:checkpoints:v2"


def encode_announcements(items: Sequence[Announcement]) -> bytes:
    return msgspec.json.encode(items)


_DECODER = msgspec.json.Decoder(list[Announcement])


def decode_announcements(raw: bytes) -> list[Announcement]:
    return _DECODER.decode(raw)


def sql_tokens(table: str, key: Iterable[Any]) -> list[str]:
    """The tokens of a row write: one per value of its key (`members` keyed by user and project
    touches `members:<user>` and `members:<project>`), so an entry can depend on either."""
    return [f"{table}:{value}" for value in key]


_TABLE = re.compile(r"\{(\w+)\}")


def sql_statement_tokens(sql: str) -> list[str]:
    """A raw statement may write any row of the tables it names: `<table>:*`."""
    return [f"{name}:*" for name in _TABLE.findall(sql)]


@dataclass
class Entry:
    value: Any
    position: int
    tokens: frozenset[str]
    size: int
    generation: int
    hits: int = 0


@dataclass
class _Drop:
    seq: int
    view: ViewId
    tokens: frozenset[str]
    tables: frozenset[str]  # the tables a `<table>:*` token names

    def touches(self, view: ViewId, tokens: frozenset[str]) -> bool:
        if view != self.view:
            return False
        if not tokens.isdisjoint(self.tokens):
            return True
        return bool(self.tables) and any(t.split(":", 1)[0] in self.tables for t in tokens)


@dataclass
class Stats:
    evictions: int = 0


@dataclass
class L1:
    max_bytes: int
    entries: OrderedDict[tuple[str, int, str], Entry] = field(default_factory=OrderedDict)
    by_token: dict[tuple[str, int, str], set[str]] = field(default_factory=dict)
    """(projection, version, token) -> keys of the entries depending on it."""
    by_table: dict[tuple[str, int, str], set[str]] = field(default_factory=dict)
    """(projection, version, table) -> keys of the entries depending on a row of it."""
    heads: dict[tuple[str, int, int], int] = field(default_factory=dict)
    stats: Stats = field(default_factory=Stats)
    size: int = 0
    seq: int = 0
    generations: dict[ViewId, int] = field(default_factory=dict)
    """A view's entries of an older generation than this are gone (a flush of one view is O(1))."""
    flushed_at: dict[ViewId, int] = field(default_factory=dict)
    """The `seq` of each view's last flush: a read ticketed before it is not kept."""
    live: dict[str, int] = field(default_factory=dict)
    """The highest version of each projection a lane was announced taken up at (or switched to):
    the live one, as versions only grow (`LiveVersions` reads it)."""
    connected: bool = False
    """False until the announcements are followed (and again whenever they are lost): nothing is
    served or kept meanwhile."""
    _log: deque[_Drop] = field(default_factory=deque)
    _logged: int = 0  # tokens in the log
    _forgotten: int = 0  # the seq of the newest drop let go of

    # -- reads ---------------------------------------------------------------------------------

    def ticket(self) -> int:
        """Taken before a read whose answer may be `put`."""
        return self.seq

    def get(self, view: ViewId, key: str, min_position: int | None = None) -> Entry | None:
        entry = self.entries.get((*view, key)) if self.connected else None
        if entry is not None and entry.generation != self.generations.get(view, 0):
            self._remove((*view, key))  # its view was flushed
            entry = None
        if entry is None or (min_position is not None and entry.position < min_position):
            return None
        self.entries.move_to_end((*view, key))
        entry.hits += 1
        return entry

    def put(
        self, ticket: int, view: ViewId, key: str, value: Any, position: int, tokens: Iterable[str], size: int
    ) -> bool:
        """Keeps a value read (with the view's checkpoint `position`) since `ticket`, unless an
        announcement heard since then may have changed it. True if kept."""
        deps = frozenset(tokens)
        if not self.max_bytes or not self.connected or not self._unchanged_since(ticket, view, deps):
            return False
        full = (*view, key)
        old = self.entries.get(full)
        if old is not None and old.generation == self.generations.get(view, 0) and old.position > position:
            return False  # a newer answer is kept already
        self._remove(full)
        charge = VALUE_FACTOR * size + ENTRY_OVERHEAD + TOKEN_OVERHEAD * len(deps)
        entry = Entry(value, position, deps, charge, self.generations.get(view, 0))
        if entry.size > self.max_bytes:
            return False
        self.entries[full] = entry
        self.size += entry.size
        for token in deps:
            self.by_token.setdefault((*view, token), set()).add(key)
            self.by_table.setdefault((*view, token.split(":", 1)[0]), set()).add(key)
        while self.size > self.max_bytes:
            oldest = next(iter(self.entries))
            self._remove(oldest)
            self.stats.evictions += 1
        return True

    def _unchanged_since(self, ticket: int, view: ViewId, tokens: frozenset[str]) -> bool:
        if ticket == self.seq:
            return True
        if ticket < self._forgotten or ticket < self.flushed_at.get(view, -1):
            return False  # flushed since, or the log no longer reaches back to the ticket
        for drop in reversed(self._log):
            if drop.seq <= ticket:
                break
            if drop.touches(view, tokens):
                return False
        return True

    # -- what the announcements say --------------------------------------------------------------

    def hear(self, announced: Announcement) -> None:
        if not self.max_bytes:
            return  # off
        view = (announced.projection, announced.version)
        if announced.fresh and announced.version > self.live.get(announced.projection, announced.version - 1):
            self.older_than(announced.projection, announced.version)  # switched: older versions are not read again
            self.live[announced.projection] = announced.version
        lane = (announced.projection, announced.version, announced.part)
        head = self.heads.get(lane)
        self.heads[lane] = max(announced.end, head or 0) if not announced.fresh else announced.end
        lost = head is not None and announced.start != head and announced.end > head
        if announced.fresh or announced.tokens is ALL or lost:
            self.flush(view)  # taken afresh, too much to name, or announcements in between were lost
            return
        self._drop(view, frozenset(announced.tokens))

    def _drop(self, view: ViewId, tokens: frozenset[str]) -> None:
        if not tokens:
            return
        self.seq += 1
        tables = frozenset(t[:-2] for t in tokens if t.endswith(":*"))
        self._log.append(_Drop(self.seq, view, tokens, tables))
        self._logged += len(tokens)
        while self._logged > LOG_TOKENS and len(self._log) > 1:
            oldest = self._log.popleft()
            self._logged -= len(oldest.tokens)
            self._forgotten = oldest.seq
        for token in tokens:
            index, name = (self.by_table, token[:-2]) if token.endswith(":*") else (self.by_token, token)
            keys = index.get((*view, name))
            for key in list(keys or ()):
                self._remove((*view, key))

    def flush(self, view: ViewId | None = None) -> None:
        """Empties one view (in O(1): its entries are let go of as they are met), or everything."""
        self.seq += 1
        if view is None:
            self.entries.clear()
            self.by_token.clear()
            self.by_table.clear()
            self.heads.clear()
            self.generations.clear()
            self.flushed_at.clear()
            self._log.clear()
            self._logged, self._forgotten = 0, self.seq
            self.size = 0
            return
        self.generations[view] = self.generations.get(view, 0) + 1
        self.flushed_at[view] = self.seq

    def older_than(self, projection: str, version: int) -> None:
        """A rebuild switched `projection` to `version`: the versions before it are not read again."""
        for view in {(p, v) for p, v, _ in self.entries if p == projection and v < version}:
            self.flush(view)

    def lost(self) -> None:
        """The announcements stopped (or have not started): nothing cached can be trusted."""
        self.connected = False
        self.flush()

    def found(self) -> None:
        """The announcements are followed again: from now on every write is heard."""
        self.flush()
        self.connected = True

    def hottest(self, n: int) -> list[tuple[str, str, int]]:
        """The `n` entries hit most since the last call (projection, key, hits), and their counts
        start again from zero: what a process starting next should read first."""
        live = ((k, e) for k, e in self.entries.items() if e.generation == self.generations.get((k[0], k[1]), 0))
        top = heapq.nlargest(n, live, key=lambda item: item[1].hits)
        found = [(projection, key, entry.hits) for (projection, _, key), entry in top if entry.hits]
        for entry in self.entries.values():
            entry.hits = 0
        return found

    def _remove(self, full: tuple[str, int, str]) -> None:
        entry = self.entries.pop(full, None)
        if entry is None:
            return
        self.size -= entry.size
        for token in entry.tokens:
            for index, name in ((self.by_token, token), (self.by_table, token.split(":", 1)[0])):
                keys = index.get((full[0], full[1], name))
                if keys is not None:
                    keys.discard(full[2])
                    if not keys:
                        del index[(full[0], full[1], name)]

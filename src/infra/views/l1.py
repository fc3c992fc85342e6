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

import re
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

ViewId = tuple[str, int]
"""A projection's name and a version of its view."""
ALL = None
"""An announcement's `tokens` when a batch touched too many to name: the whole view."""
MAX_TOKENS = 512
"""A batch that touched more tokens than this is announced as touching everything."""
LOG_SIZE = 4096
"""How many recent drops `put` can look back over; an older ticket is refused."""
ENTRY_OVERHEAD = 256
"""Bytes charged to an entry beyond its value's (its key, tokens and bookkeeping)."""


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
    """The Redis channel the announcements are published on."""
    return f"{namespace}:checkpoints"


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


def _matches(tokens: frozenset[str], touched: frozenset[str] | None) -> bool:
    if touched is None:
        return True
    if not tokens.isdisjoint(touched):
        return True
    tables = {t[:-1] for t in touched if t.endswith(":*")}
    return bool(tables) and any(t.split(":", 1)[0] + ":" in tables for t in tokens)


@dataclass
class Entry:
    value: Any
    position: int
    tokens: frozenset[str]
    size: int
    hits: int = 0


@dataclass
class _Drop:
    seq: int
    view: ViewId | None  # None: every view
    tokens: frozenset[str] | None  # None: the whole view


@dataclass
class Stats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    refused: int = 0
    flushes: int = 0


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
    live: dict[str, int] = field(default_factory=dict)
    """The highest version of each projection a lane was announced taken up at (or switched to):
    the live one, as versions only grow (`LiveVersions` reads it)."""
    connected: bool = False
    """False until the announcements are followed (and again whenever they are lost): nothing is
    served or kept meanwhile."""
    _log: deque[_Drop] = field(default_factory=lambda: deque(maxlen=LOG_SIZE))

    # -- reads ---------------------------------------------------------------------------------

    def ticket(self) -> int:
        """Taken before a read whose answer may be `put`."""
        return self.seq

    def get(self, view: ViewId, key: str, min_position: int | None = None) -> Entry | None:
        entry = self.entries.get((*view, key)) if self.connected else None
        if entry is None or (min_position is not None and entry.position < min_position):
            self.stats.misses += 1
            return None
        self.entries.move_to_end((*view, key))
        self.stats.hits += 1
        entry.hits += 1
        return entry

    def put(
        self, ticket: int, view: ViewId, key: str, value: Any, position: int, tokens: Iterable[str], size: int
    ) -> bool:
        """Keeps a value read (with the view's checkpoint `position`) since `ticket`, unless an
        announcement heard since then may have changed it. True if kept."""
        deps = frozenset(tokens)
        if not self.connected or not self._unchanged_since(ticket, view, deps):
            self.stats.refused += 1
            return False
        full = (*view, key)
        old = self.entries.get(full)
        if old is not None and old.position > position:
            return False  # a newer answer is kept already
        self._remove(full)
        entry = Entry(value, position, deps, size + ENTRY_OVERHEAD + 16 * len(deps))
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
        if not self._log or self._log[0].seq > ticket + 1:
            return False  # the log no longer reaches back to the ticket
        for drop in reversed(self._log):
            if drop.seq <= ticket:
                break
            if (drop.view is None or drop.view == view) and _matches(tokens, drop.tokens):
                return False
        return True

    # -- what the announcements say --------------------------------------------------------------

    def hear(self, announcement: Announcement) -> None:
        a = announcement
        view = (a.projection, a.version)
        if a.fresh and a.version > self.live.get(a.projection, a.version - 1):
            self.older_than(a.projection, a.version)  # switched: the older versions are not read again
            self.live[a.projection] = a.version
        lane = (a.projection, a.version, a.part)
        head = self.heads.get(lane)
        self.heads[lane] = max(a.end, head or 0) if not a.fresh else a.end
        if a.fresh or a.tokens is ALL or (head is not None and a.start != head and a.end > head):
            self.flush(view)  # taken afresh, too much to name, or announcements in between were lost
            return
        self._drop(view, frozenset(a.tokens))

    def _drop(self, view: ViewId, tokens: frozenset[str]) -> None:
        self.seq += 1
        self._log.append(_Drop(self.seq, view, tokens))
        for token in tokens:
            index, name = (self.by_table, token[:-2]) if token.endswith(":*") else (self.by_token, token)
            keys = index.get((*view, name))
            for key in list(keys or ()):
                self._remove((*view, key))

    def flush(self, view: ViewId | None = None) -> None:
        """Empties one view (every version of its projection if `view` names version -1), or
        everything."""
        self.seq += 1
        self.stats.flushes += 1
        self._log.append(_Drop(self.seq, view, None))
        if view is None:
            self.entries.clear()
            self.by_token.clear()
            self.by_table.clear()
            self.heads.clear()
            self.size = 0
            return
        for full in [k for k in self.entries if k[0] == view[0] and view[1] in (-1, k[1])]:
            self._remove(full)

    def older_than(self, projection: str, version: int) -> None:
        """A rebuild switched `projection` to `version`: the versions before it are not read again."""
        for full in [k for k in self.entries if k[0] == projection and k[1] < version]:
            self._remove(full)

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
        top = sorted(self.entries.items(), key=lambda item: item[1].hits, reverse=True)[:n]
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


def tokens_of(mapping: Mapping[str, Iterable[Any]]) -> list[str]:
    """Tokens of an entry that depends on some rows of some tables (`{"projects": [id]}`)."""
    return [f"{table}:{value}" for table, values in mapping.items() for value in values]

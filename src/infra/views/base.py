"""What every view store is (one interface for the projector, rebuilds and operations) and how it
refuses: `StaleCheckpoint` when the stored checkpoint is not the one a batch was planned from (a
fencing token against a projector that lost its lock but has not noticed yet), `Parked` when a
consumer stopped at an event it could not apply."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from infra.eventstore.envelope import EventEnvelope
from projections.base import EventConsumer


class StaleCheckpoint(Exception):
    """The stored checkpoint is not the one this batch was planned from."""


class Parked(Exception):
    """The projection stopped at an event it could not apply."""


@dataclass
class Fingerprint:
    """Per table (or key kind): how many rows/keys, and a checksum of their content."""

    counts: dict[str, int] = field(default_factory=dict)
    checksums: dict[str, str] = field(default_factory=dict)

    def differences(self, other: Fingerprint) -> list[str]:
        found = []
        for part in sorted(set(self.counts) | set(other.counts)):
            mine, theirs = self.counts.get(part, 0), other.counts.get(part, 0)
            if mine != theirs:
                found.append(f"{part}: {mine} rows here, {theirs} there")
            elif self.checksums.get(part) != other.checksums.get(part):
                found.append(f"{part}: same number of rows ({mine}), different content")
        return found


class ViewStore(Protocol):
    """A version of a consumer's view and its checkpoint. `apply` lands a batch and moves the
    checkpoint from `expected` to `new` atomically (or raises `StaleCheckpoint` and lands nothing);
    an empty batch only moves the checkpoint."""

    @property
    def projection(self) -> EventConsumer: ...

    @property
    def version(self) -> int: ...

    async def prepare(self) -> None:
        """Creates the version's tables (if any); safe to call again."""

    async def publish_views(self) -> None:
        """Makes this version the one queries read."""

    async def checkpoint(self) -> int: ...

    touched: set[str] | None
    """What the last `apply` may have changed, as tokens of the API processes' caches
    (infra.views.l1); None: anything."""

    async def apply(self, envelopes: Sequence[EventEnvelope], expected: int, new: int) -> None: ...

    async def fingerprint(self) -> Fingerprint:
        """Counts and checksums of the view, to compare two versions."""
        ...

    async def drop(self) -> None:
        """Removes the version's view and checkpoint."""

"""The auditors' application: records each access to history, and reconstructs any aggregate as
it was at a version (the library's repository replays its events, snapshots included)."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import EventStore

from commands.base import ChronicleApplication, CommandResult, Context
from commands.snapshots import IgnoredSnapshot, check_all
from domain.audit import AuditAccess
from domain.errors import NotFound
from domain.identity import SECRET_FIELDS

REDACTED = "[redacted]"


class AuditApplication(ChronicleApplication):
    name = "audit"

    def record_access(self, ctx: Context, route: str, query: dict[str, str]) -> CommandResult:
        access = AuditAccess(auditor=ctx.actor_id or "unknown", route=route, query=query)
        return self.record(ctx, access, result_of=access)

    def check_snapshots(self) -> list[IgnoredSnapshot]:
        """Every snapshot checked against a replay of its stream (commands.snapshots); those that
        disagree are reported and returned."""
        snapshots = EventStore(self.mapper, self.factory.aggregate_recorder("snapshots"))
        return list(check_all(self, snapshots))

    def state_at(self, stream_id: uuid.UUID, version: int) -> dict[str, Any]:
        """The aggregate as it was after `version`, as plain JSON values, secrets redacted."""
        try:
            aggregate: Aggregate = self.repository.get(stream_id, version=version)
        except AggregateNotFoundError:
            raise NotFound(f"stream {stream_id} has no version {version}") from None
        if aggregate.version != version:
            raise NotFound(f"stream {stream_id} has no version {version} (it is at {aggregate.version})")
        state = {k: v for k, v in vars(aggregate).items() if not k.startswith("_")}
        for secret in SECRET_FIELDS & state.keys():
            state[secret] = REDACTED
        erased_in = getattr(self.mapper, "erased_in", None)  # Chronicle's mapper (infra.eventstore.personal)
        return {
            "stream_id": str(stream_id),
            "type": type(aggregate).__qualname__,
            "version": aggregate.version,
            "state": msgspec.to_builtins(state, order="sorted"),
            "erased": bool(erased_in and erased_in(self.recorder.select_events(stream_id, lte=version))),
        }

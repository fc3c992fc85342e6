"""Audit: every look at the history is itself history. Each access is a one-event stream."""

from __future__ import annotations

from eventsourcing.domain import Aggregate, event


class AuditAccess(Aggregate):
    class Recorded(Aggregate.Created):
        auditor: str
        route: str
        query: dict[str, str]

    @event(Recorded)
    def __init__(self, auditor: str, route: str, query: dict[str, str]) -> None:
        self.auditor = auditor
        self.route = route
        self.query = query

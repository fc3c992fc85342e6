"""Domain errors. Each says what rule was broken, in words a client can show.

Three kinds, which the API maps to HTTP statuses: a `Conflict` with the current state (409), an
`Invalid` request that no state could accept (422), and `NotFound` (404).
"""

from __future__ import annotations


class DomainError(Exception):
    """A command was refused by a rule of the domain."""

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


class Conflict(DomainError):
    """The command contradicts the aggregate's current state."""


class Invalid(DomainError):
    """The command's values break a rule whatever the state."""


class NotFound(DomainError):
    """The command names something that does not exist."""


class Forbidden(DomainError):
    """The actor may not run this command on this aggregate."""

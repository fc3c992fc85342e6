"""Who may see and change what: the access policy of projects, tasks, orders, the catalog and the
user directory, in one place. Commands apply it to the aggregates they load; queries apply it to
read models (the project rule also in SQL, see `projections.projects.VISIBLE`).

A member may see and command a project's tasks only in projects they belong to; anyone who may
not see a project, a task or an order is told it does not exist (404), never that it is hidden.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from domain.identity import Role

STAFF = frozenset({Role.MANAGER, Role.ADMIN})
"""Managers and admins: they see and command every project and order, and run the catalog."""
SEES_EMAILS = frozenset({Role.MANAGER, Role.ADMIN, Role.AUDITOR})


@dataclass(frozen=True)
class Actor:
    """The authenticated caller, as the access token describes them."""

    user_id: uuid.UUID
    roles: frozenset[Role] = frozenset({Role.MEMBER})

    @property
    def is_staff(self) -> bool:
        """Managers and admins may command any project."""
        return bool(self.roles & STAFF)


# projects and their tasks


def sees_every_project(actor: Actor) -> bool:
    return actor.is_staff


def may_see_project(actor: Actor, *, is_member: bool) -> bool:
    """Seeing a project, its tasks and its board, and commanding its tasks: its members and staff."""
    return sees_every_project(actor) or is_member


def may_manage_project(actor: Actor, *, owner_id: uuid.UUID) -> bool:
    """Renaming, archiving and membership: the project's owner and staff."""
    return actor.is_staff or owner_id == actor.user_id


# orders


def sees_every_order(actor: Actor) -> bool:
    return actor.is_staff


def may_see_order(actor: Actor, *, customer_id: uuid.UUID) -> bool:
    """Seeing an order, paying and cancelling it: its customer and staff."""
    return sees_every_order(actor) or customer_id == actor.user_id


def may_fulfil_orders(actor: Actor) -> bool:
    """Shipping and delivering: staff only."""
    return actor.is_staff


# catalog and stock


def may_change_catalog(actor: Actor | None) -> bool:
    return actor is not None and actor.is_staff


# users


def sees_email_of(actor: Actor, user_id: uuid.UUID) -> bool:
    """A user's email: the user themself, staff and auditors."""
    return actor.user_id == user_id or bool(actor.roles & SEES_EMAILS)

"""Who may see and change projects, tasks, orders, the catalog and emails."""

from __future__ import annotations

import uuid

from domain import access
from domain.access import Actor
from domain.identity import Role

ME, OTHER = uuid.uuid4(), uuid.uuid4()
MEMBER = Actor(ME)
MANAGER = Actor(ME, frozenset({Role.MEMBER, Role.MANAGER}))
ADMIN = Actor(ME, frozenset({Role.MEMBER, Role.ADMIN}))
AUDITOR = Actor(ME, frozenset({Role.MEMBER, Role.AUDITOR}))


def test_a_project_is_seen_by_its_members_and_staff_and_managed_by_its_owner_and_staff() -> None:
    assert access.may_see_project(MEMBER, is_member=True)
    assert not access.may_see_project(MEMBER, is_member=False)
    assert not access.may_see_project(AUDITOR, is_member=False)
    assert access.may_see_project(MANAGER, is_member=False) and access.may_see_project(ADMIN, is_member=False)
    assert access.may_manage_project(MEMBER, owner_id=ME)
    assert not access.may_manage_project(MEMBER, owner_id=OTHER)
    assert access.may_manage_project(ADMIN, owner_id=OTHER)
    assert [access.sees_every_project(a) for a in (MEMBER, AUDITOR, MANAGER, ADMIN)] == [False, False, True, True]


def test_an_order_is_its_customers_and_staffs_and_only_staff_fulfil_it() -> None:
    assert access.may_see_order(MEMBER, customer_id=ME)
    assert not access.may_see_order(MEMBER, customer_id=OTHER)
    assert not access.may_see_order(AUDITOR, customer_id=OTHER)
    assert access.may_see_order(MANAGER, customer_id=OTHER)
    assert not access.may_fulfil_orders(MEMBER) and access.may_fulfil_orders(ADMIN)
    assert [access.sees_every_order(a) for a in (MEMBER, AUDITOR, MANAGER, ADMIN)] == [False, False, True, True]


def test_only_staff_change_the_catalog() -> None:
    assert [access.may_change_catalog(a) for a in (None, MEMBER, AUDITOR, MANAGER, ADMIN)] == [
        False,
        False,
        False,
        True,
        True,
    ]


def test_an_email_is_seen_by_its_user_staff_and_auditors() -> None:
    assert access.sees_email_of(MEMBER, ME) and not access.sees_email_of(MEMBER, OTHER)
    assert all(access.sees_email_of(a, OTHER) for a in (MANAGER, ADMIN, AUDITOR))

"""The insert-only log: the services' role may only add to `events` and `seals` and read them; a
trigger refuses UPDATE, DELETE and TRUNCATE to everyone, the owner included, but on the maintenance
path (a member of the owner role who sets `chronicle.maintenance` in the transaction)."""

from __future__ import annotations

import psycopg
import psycopg.errors
import pytest

from commands.base import Context
from infra.settings import Settings
from tests.conftest import as_owner

REFUSED = (psycopg.errors.InsufficientPrivilege,)


@pytest.fixture(scope="module")
def one_event(chronicle_app: object) -> None:
    """Events to refuse changing (the statements refused would otherwise change nothing)."""
    chronicle_app.identity.register(Context("t"), "insert-only@example.com", "Insert Only", "long enough pw")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET command = 'rewritten'",
        "DELETE FROM events",
        "TRUNCATE events",
        "UPDATE seals SET event_count = 0",
        "DELETE FROM seals",
        "TRUNCATE seals",
    ],
)
def test_the_service_role_may_not_change_or_remove_the_log(settings: Settings, one_event: None, statement: str) -> None:
    with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("chronicle_app",)
        with pytest.raises(REFUSED):
            conn.execute(statement.encode())
        with pytest.raises(REFUSED), conn.transaction():
            conn.execute("SET LOCAL chronicle.maintenance = 'on'")  # the maintenance path is not theirs
            conn.execute(statement.encode())
        assert conn.execute("SELECT count(*) FROM events").fetchone() != (0,)


def test_the_owner_is_refused_too_except_on_the_maintenance_path(owner_database_url: str, one_event: None) -> None:
    with psycopg.connect(as_owner(owner_database_url), autocommit=True) as conn:
        with pytest.raises(REFUSED, match="insert-only"):
            conn.execute("UPDATE events SET command = command WHERE false")
        with pytest.raises(REFUSED, match="insert-only"):
            conn.execute("DELETE FROM seals WHERE false")
        with conn.transaction():
            conn.execute("SET LOCAL chronicle.maintenance = 'on'")
            conn.execute("UPDATE events SET command = command WHERE false")
        with pytest.raises(REFUSED):  # SET LOCAL ended with its transaction
            conn.execute("TRUNCATE seals")


def test_the_services_still_append_and_read(settings: Settings, one_event: None) -> None:
    with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM events WHERE command = 't'").fetchone()
    assert row is not None and row[0] >= 2  # the user and the email claim

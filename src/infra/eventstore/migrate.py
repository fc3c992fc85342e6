"""Versioned schema migrations: numbered SQL files applied once each, in order, by `chronicle migrate`.

Services never create tables: they check that the schema is at the version their code expects and
refuse to start otherwise. Concurrent `migrate` runs serialize on an advisory lock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import psycopg

_LOCK_KEY = 0x6368726F6E  # "chron"
_FILENAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class SchemaOutOfDate(RuntimeError):
    """The database's schema is older than this code needs."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    found = []
    for entry in resources.files("infra.eventstore.migrations").iterdir():
        match = _FILENAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations must be numbered 1..n without gaps, found {versions}")
    return found


def latest_version() -> int:
    return len(migrations())


def migrate(database_url: str) -> list[Migration]:
    """Applies every migration the database lacks; returns those applied now."""
    applied: list[Migration] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for migration in migrations():
                if migration.version in done:
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                applied.append(migration)
            if current_version(conn) >= 4:
                backfill_hashes(conn)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied


def backfill_hashes(conn: psycopg.Connection[tuple[object, ...]], batch: int = 5000) -> int:
    """Gives events appended before event hashing (migration 0004) their hash; returns how many."""
    from infra.eventstore.envelope import LOG_COLUMNS
    from infra.eventstore.tamper import hash_of_row

    done = 0
    while True:
        rows = conn.execute(
            f"SELECT {LOG_COLUMNS} FROM events WHERE hash IS NULL ORDER BY notification_id LIMIT %s", (batch,)
        ).fetchall()
        if not rows:
            return done
        with conn.cursor() as cur:
            cur.executemany(
                "UPDATE events SET hash = %s WHERE notification_id = %s",
                [(hash_of_row(row[1:]), row[0]) for row in rows],
            )
        done += len(rows)


def current_version(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    return int(row[0]) if row else 0  # type: ignore[call-overload]  # row[0] is an int from SQL


def check_schema(database_url: str) -> None:
    """Raises SchemaOutOfDate unless every migration this code knows has been applied."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        have = current_version(conn)
    want = latest_version()
    if have < want:
        raise SchemaOutOfDate(
            f"the database schema is at version {have}, this code needs {want}: run `chronicle migrate`"
        )

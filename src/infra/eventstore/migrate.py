"""Versioned schema migrations: numbered SQL files applied once each, in order, by `chronicle migrate`.

Services never create tables: they check that the schema is at the version their code expects and
refuse to start otherwise. Concurrent `migrate` runs serialize on an advisory lock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import psycopg
import psycopg.errors
from psycopg import sql

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


SERVICE_ROLE = "chronicle_service"
OWNER_ROLE = "chronicle_owner"
SERVICE_LOGIN = "chronicle_app"
"""The login `chronicle dev` and the tests give the services (a member of SERVICE_ROLE)."""


def service_url(owner_url: str, user: str = SERVICE_LOGIN, password: str | None = SERVICE_LOGIN) -> str:
    """The same database as `owner_url`, logged in as the services' login."""
    parts = urlsplit(owner_url)
    host = parts.hostname or ""
    netloc = f"{quote(user)}{':' + quote(password) if password else ''}@{'[' + host + ']' if ':' in host else host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def migrate(database_url: str, service: str | None = None) -> list[Migration]:
    """Applies every migration the database lacks; returns those applied now. With `service` (the
    URL the services connect with), its login is made a member of the service role (created, or
    given the URL's password, as needed)."""
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
            if service is not None and current_version(conn) >= 8:
                ensure_service_login(conn, service)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied


def ensure_service_login(conn: psycopg.Connection[tuple[object, ...]], url: str) -> None:
    """Makes the user of `url` a login in the service role (with the URL's password, if any), unless
    it is the user migrating (then the services run as the owner: a setup this does not change)."""
    parts = urlsplit(url)
    user = unquote(parts.username or "")
    me = conn.execute("SELECT current_user").fetchone()
    if not user or (me is not None and me[0] == user):
        return
    role, service = sql.Identifier(user), sql.Identifier(SERVICE_ROLE)
    password = sql.SQL(" PASSWORD {}").format(sql.Literal(unquote(parts.password))) if parts.password else sql.SQL("")
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone()
    try:
        if exists is None:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN{}").format(role, password))
        elif parts.password:
            conn.execute(sql.SQL("ALTER ROLE {}{}").format(role, password))
    except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
        pass  # made meanwhile by a migration of another database on the same server
    conn.execute(sql.SQL("GRANT {} TO {}").format(service, role))


def backfill_hashes(conn: psycopg.Connection[tuple[object, ...]], batch: int = 5000) -> int:
    """Gives events appended before event hashing (migration 0004) their hash; returns how many.
    Takes the insert-only log's maintenance path (migration 0009)."""
    from infra.eventstore.envelope import LOG_COLUMNS
    from infra.eventstore.tamper import hash_of_row

    done = 0
    while True:
        rows = conn.execute(
            f"SELECT {LOG_COLUMNS} FROM events WHERE hash IS NULL ORDER BY notification_id LIMIT %s", (batch,)
        ).fetchall()
        if not rows:
            return done
        with conn.transaction(), conn.cursor() as cur:
            if current_version(conn) >= 8:
                cur.execute("SET LOCAL chronicle.maintenance = 'on'")
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

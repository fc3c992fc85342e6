"""UserDirectory: who is who. Never the password hash: no event field of it is read here."""

from __future__ import annotations

from infra.envelope import EventEnvelope
from projections.base import SqlProjection, SqlView, when


class UserDirectory(SqlProjection):
    name = "user_directory"
    version = 1
    schema = "identity_views"
    description = "users: id, name, email, roles"
    handles = frozenset({"User.Registered", "User.RoleGranted", "User.RoleRevoked", "User.PasswordHashChanged"})
    tables = {
        "users": "CREATE TABLE {users} (id uuid PRIMARY KEY, name text NOT NULL, email text NOT NULL,"
                 " roles text[] NOT NULL, registered_at timestamptz NOT NULL, version bigint NOT NULL);"
                 " CREATE INDEX ON {users} (email)",
    }

    def apply(self, event: EventEnvelope, view: SqlView) -> None:
        data = event.data
        match event.type:
            case "User.Registered":
                view.execute("INSERT INTO {users} (id, name, email, roles, registered_at, version)"
                             " VALUES (%s, %s, %s, ARRAY['member'], %s, %s) ON CONFLICT (id) DO NOTHING",
                             (event.stream_id, data["name"], data["email"], when(event), event.version))
            case "User.RoleGranted":
                view.execute("UPDATE {users} SET roles = CASE WHEN %s = ANY(roles) THEN roles"
                             " ELSE array_append(roles, %s) END, version = %s WHERE id = %s",
                             (data["role"], data["role"], event.version, event.stream_id))
            case "User.RoleRevoked":
                view.execute("UPDATE {users} SET roles = array_remove(roles, %s), version = %s WHERE id = %s",
                             (data["role"], event.version, event.stream_id))
            case "User.PasswordHashChanged":
                view.execute("UPDATE {users} SET version = %s WHERE id = %s", (event.version, event.stream_id))

"""UserDirectory: who is who. Never the password hash: no event field of it is read here. An erased
user stays, with no name and no email, marked erased."""

from __future__ import annotations

from domain.identity import User
from infra.eventstore.envelope import EventEnvelope
from projections.base import SqlProjection, SqlView, when
from projections.events import event_class, handled


class UserDirectory(SqlProjection):
    name = "user_directory"
    version = 2
    schema = "identity_views"
    description = "users: id, name, email, roles, erased"
    handles = handled(
        User.Registered,
        User.RoleGranted,
        User.RoleRevoked,
        User.PasswordHashChanged,
        User.PasswordChanged,
        User.Erased,
    )
    tables = {
        "users": "CREATE TABLE {users} (id uuid PRIMARY KEY, name text, email text,"
        " roles text[] NOT NULL, registered_at timestamptz NOT NULL, version bigint NOT NULL,"
        " erased boolean NOT NULL DEFAULT false);"
        " CREATE INDEX ON {users} (email)",
    }
    keys = {"users": ("id",)}

    def apply(self, event: EventEnvelope, view: SqlView) -> None:
        data, user = event.data, event.stream_id
        match event_class(event):
            case User.Registered:
                view.insert(
                    "users",
                    {
                        "id": user,
                        "name": data["name"],
                        "email": data["email"],
                        "roles": ["member"],
                        "registered_at": when(event),
                        "version": event.version,
                        "erased": data["email"] is None,
                    },
                )
            case User.RoleGranted:
                view.execute(
                    "UPDATE {users} SET roles = CASE WHEN %s = ANY(roles) THEN roles"
                    " ELSE array_append(roles, %s) END WHERE id = %s",
                    (data["role"], data["role"], user),
                )
                view.update("users", (user,), {"version": event.version})
            case User.RoleRevoked:
                view.execute("UPDATE {users} SET roles = array_remove(roles, %s) WHERE id = %s", (data["role"], user))
                view.update("users", (user,), {"version": event.version})
            case User.PasswordHashChanged | User.PasswordChanged:
                view.update("users", (user,), {"version": event.version})
            case User.Erased:
                view.update("users", (user,), {"name": None, "email": None, "erased": True, "version": event.version})
            case _:
                pass  # not one of `handles`: the projector never sends it


# -- queries ------------------------------------------------------------------------------------------
# They return rows of this view's tables; the API shapes them into its response types (whose module
# is part of the OpenAPI document: a generic `Page[T]` is named after T's module).

USER_COLUMNS = "id, name, roles, registered_at, version, email, erased"

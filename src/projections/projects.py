"""ProjectCatalog: projects with owner, members, archived flag and task counts."""

from __future__ import annotations

from infra.envelope import EventEnvelope
from projections.base import SqlProjection, SqlView, uuid_or_none, when


class ProjectCatalog(SqlProjection):
    name = "project_catalog"
    version = 1
    schema = "work_views"
    description = "projects (owner, members, archived, task counts) and memberships"
    handles = frozenset({"Project.Created", "Project.Renamed", "Project.Archived", "Project.MemberAdded",
                         "Project.MemberRemoved", "Task.Created", "Task.Completed", "Task.Reopened"})
    tables = {
        "projects": "CREATE TABLE {projects} (id uuid PRIMARY KEY, name text NOT NULL, description text NOT NULL,"
                    " owner_id uuid NOT NULL, archived boolean NOT NULL DEFAULT false,"
                    " task_count integer NOT NULL DEFAULT 0, done_count integer NOT NULL DEFAULT 0,"
                    " created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL, version bigint NOT NULL);"
                    " CREATE INDEX ON {projects} (created_at, id)",
        "members": "CREATE TABLE {members} (user_id uuid NOT NULL, project_id uuid NOT NULL,"
                   " PRIMARY KEY (user_id, project_id)); CREATE INDEX ON {members} (project_id)",
        "task_projects": "CREATE TABLE {task_projects} (task_id uuid PRIMARY KEY, project_id uuid NOT NULL)",
    }

    def apply(self, event: EventEnvelope, view: SqlView) -> None:
        data, project = event.data, event.stream_id
        match event.type:
            case "Project.Created":
                owner = uuid_or_none(data["owner_id"])
                view.execute("INSERT INTO {projects} (id, name, description, owner_id, created_at, updated_at, version)"
                             " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                             (project, data["name"], data.get("description", ""), owner, when(event), when(event),
                              event.version))
                view.execute("INSERT INTO {members} VALUES (%s, %s) ON CONFLICT DO NOTHING", (owner, project))
            case "Project.Renamed":
                self._touch(view, event, "name = %s", data["name"])
            case "Project.Archived":
                self._touch(view, event, "archived = true")
            case "Project.MemberAdded":
                view.execute("INSERT INTO {members} VALUES (%s, %s) ON CONFLICT DO NOTHING",
                             (uuid_or_none(data["user_id"]), project))
                self._touch(view, event)
            case "Project.MemberRemoved":
                view.execute("DELETE FROM {members} WHERE user_id = %s AND project_id = %s",
                             (uuid_or_none(data["user_id"]), project))
                self._touch(view, event)
            case "Task.Created":
                view.execute("INSERT INTO {task_projects} VALUES (%s, %s) ON CONFLICT DO NOTHING",
                             (event.stream_id, uuid_or_none(data["project_id"])))
                self._count(view, data["project_id"], "task_count = task_count + 1")
            case "Task.Completed":
                self._count_for_task(view, event, "done_count = done_count + 1")
            case "Task.Reopened":
                self._count_for_task(view, event, "done_count = done_count - 1")

    @staticmethod
    def _touch(view: SqlView, event: EventEnvelope, change: str = "", *params: object) -> None:
        sets = f"{change}, " if change else ""
        view.execute(f"UPDATE {{projects}} SET {sets}updated_at = %s, version = %s WHERE id = %s",
                     (*params, when(event), event.version, event.stream_id))

    @staticmethod
    def _count(view: SqlView, project_id: object, change: str) -> None:
        view.execute(f"UPDATE {{projects}} SET {change} WHERE id = %s", (uuid_or_none(project_id),))

    @staticmethod
    def _count_for_task(view: SqlView, event: EventEnvelope, change: str) -> None:
        """Task events other than Created do not name the project: this view remembers it."""
        view.execute(f"UPDATE {{projects}} SET {change} WHERE id = (SELECT project_id FROM {{task_projects}}"
                     " WHERE task_id = %s)", (event.stream_id,))

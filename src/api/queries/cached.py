"""The hot reads through this process's cache (infra.views.l1): a task, a project, a board, a user,
a product and the first page of a catalog listing.

Each read that misses goes to its view once, reading the view's checkpoint with the value (one SQL
statement, which also names the live version; or one Redis round trip, the checkpoint read first),
and keeps the answer *before* any caller's rights are applied: who may see it is decided on every
answer, hit or miss, for the caller at hand. A query with `X-Min-Position` is answered from the
cache only by an entry read at or after that position; otherwise it waits and reads the view.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from api.runtime import Runtime
from commands.base import Actor
from domain import access
from domain.errors import NotFound
from infra.observe.metrics import CACHE_BYTES, CACHE_EVICTIONS, CACHE_HITS, CACHE_MISSES
from infra.views.l1 import L1, ViewId
from infra.views.sqlstore import version_position
from projections.board import TaskBoard
from projections.catalog import CatalogCache, CatalogFilter, listing_page
from projections.projects import PROJECT_COLUMNS, ProjectCatalog
from projections.tasks import TASK_COLUMNS, TaskList
from projections.users import USER_COLUMNS, UserDirectory

_HITS, _MISSES, _EVICTIONS = CACHE_HITS.labels("l1"), CACHE_MISSES.labels("l1"), CACHE_EVICTIONS.labels("l1")
_BYTES = CACHE_BYTES.labels("l1")


async def _hit(runtime: Runtime, projection: str, key: str, min_position: int | None) -> Any | None:
    """What the cache holds under `key` of `projection`'s live version (at or after `min_position`),
    or None."""
    view = (projection, await runtime.live_versions.get(projection))
    entry = runtime.cache.get(view, key, min_position)
    (_HITS if entry is not None else _MISSES).inc()
    return None if entry is None else entry.value


def keep(cache: L1, ticket: int, view: ViewId, key: str, value: Any, position: int, tokens: list[str]) -> None:
    evicted = cache.stats.evictions
    size = len(value) if isinstance(value, bytes) else len(msgspec.json.encode(value))
    cache.put(ticket, view, key, value, position, tokens, size)
    if cache.stats.evictions != evicted:
        _EVICTIONS.inc(cache.stats.evictions - evicted)
    _BYTES.set(cache.size)


def _live(parameter: str) -> str:
    """The live version and checkpoint of the SQL view named by `%(parameter)s`, as two columns."""
    live = f"(SELECT live_version FROM projections WHERE projection = %({parameter})s)"
    return f"{live}, {version_position(f'%({parameter})s', live)}"


_NAMES = {"tasks": TaskList.name, "projects": ProjectCatalog.name, "users": UserDirectory.name}
_T = ", ".join(f"t.{c.strip()}" for c in TASK_COLUMNS.split(","))
_TASK_AND_PROJECT = (
    f"SELECT {_T}, {PROJECT_COLUMNS}, {_live('tasks')}, {_live('projects')}"
    " FROM (SELECT %(id)s::uuid AS id) x LEFT JOIN work_views.tasks t ON t.id = x.id"
    " LEFT JOIN work_views.projects p ON p.id = t.project_id"
)
_PROJECT = (
    f"SELECT {PROJECT_COLUMNS}, {_live('projects')}"
    " FROM (SELECT %(id)s::uuid AS id) x LEFT JOIN work_views.projects p ON p.id = x.id"
)
_USER = (
    f"SELECT {', '.join(f'u.{c.strip()}' for c in USER_COLUMNS.split(','))}, {_live('users')}"
    " FROM (SELECT %(id)s::uuid AS id) x LEFT JOIN identity_views.users u ON u.id = x.id"
)


def visible(actor: Actor, project: Any) -> bool:
    return access.may_see_project(actor, is_member=actor.user_id in project.members)


# -- work: tasks and projects ---------------------------------------------------------------------


async def project_entry(runtime: Runtime, project_id: uuid.UUID, min_position: int | None) -> Any | None:
    """The project (any caller's: apply `visible`), or None if the cache cannot say."""
    return await _hit(runtime, ProjectCatalog.name, f"project:{project_id}", min_position)


def _keep_project(runtime: Runtime, ticket: int, project: Any, version: int, position: int) -> None:
    tokens = [f"projects:{project.id}", f"members:{project.id}"]
    keep(runtime.cache, ticket, (ProjectCatalog.name, version), f"project:{project.id}", project, position, tokens)


async def cached_task(runtime: Runtime, actor: Actor, task_id: uuid.UUID, min_position: int | None) -> Any | None:
    """The task if the cache has it and its project (None: read the views); NotFound when
    `actor` may not see it."""
    task = await _hit(runtime, TaskList.name, f"task:{task_id}", min_position)
    if task is None:
        return None
    project = await project_entry(runtime, task.project_id, min_position)
    if project is None:
        return None
    if not visible(actor, project):
        raise NotFound(f"task {task_id} not found")
    return task


async def read_task(runtime: Runtime, actor: Actor, task_id: uuid.UUID, task: type[Any], project: type[Any]) -> Any:
    """The task read from the views (and kept); NotFound if it does not exist or `actor` may not
    see it."""
    ticket = runtime.cache.ticket()
    async with runtime.views.connection() as conn:
        row = await (await conn.execute(_TASK_AND_PROJECT, {"id": task_id, **_NAMES})).fetchone()
    t, p = len(task.__struct_fields__), len(project.__struct_fields__)
    if row is None or row[0] is None:
        raise NotFound(f"task {task_id} not found")
    found = task(*row[:t])
    if row[t] is None:  # its project not in project_catalog yet: only staff see every project
        if access.sees_every_project(actor):
            return found
        raise NotFound(f"task {task_id} not found")
    owner = project(*row[t : t + p])
    task_version, task_at, project_version, project_at = row[t + p :]
    _learn(runtime, TaskList.name, task_version)
    _learn(runtime, ProjectCatalog.name, project_version)
    if task_at is not None and project_at is not None:
        keep(
            runtime.cache,
            ticket,
            (TaskList.name, task_version),
            f"task:{task_id}",
            found,
            task_at,
            [f"tasks:{task_id}"],
        )
        _keep_project(runtime, ticket, owner, project_version, project_at)
    if not visible(actor, owner):
        raise NotFound(f"task {task_id} not found")
    return found


async def read_project(runtime: Runtime, actor: Actor, project_id: uuid.UUID, project: type[Any]) -> Any:
    ticket = runtime.cache.ticket()
    async with runtime.views.connection() as conn:
        row = await (await conn.execute(_PROJECT, {"id": project_id, **_NAMES})).fetchone()
    if row is None or row[0] is None:
        raise NotFound(f"project {project_id} not found")
    width = len(project.__struct_fields__)
    found = project(*row[:width])
    version, at = row[width:]
    _learn(runtime, ProjectCatalog.name, version)
    if at is not None:
        _keep_project(runtime, ticket, found, version, at)
    if not visible(actor, found):
        raise NotFound(f"project {project_id} not found")
    return found


def _learn(runtime: Runtime, projection: str, version: int | None) -> None:
    if version is not None:
        runtime.live_versions.learn(projection, int(version))


# -- identity: users ------------------------------------------------------------------------------


async def cached_user(runtime: Runtime, user_id: uuid.UUID, min_position: int | None) -> Any | None:
    return await _hit(runtime, UserDirectory.name, f"user:{user_id}", min_position)


async def read_user(runtime: Runtime, user_id: uuid.UUID, user: type[Any]) -> Any | None:
    ticket = runtime.cache.ticket()
    async with runtime.views.connection() as conn:
        row = await (await conn.execute(_USER, {"id": user_id, **_NAMES})).fetchone()
    if row is None or row[0] is None:
        return None
    width = len(user.__struct_fields__)
    found = user(*row[:width])
    version, at = row[width:]
    _learn(runtime, UserDirectory.name, version)
    if at is not None:
        keep(runtime.cache, ticket, (UserDirectory.name, version), f"user:{user_id}", found, at, [f"users:{user_id}"])
    return found


# -- Redis views: boards, products, catalog first pages -------------------------------------------


async def cached_board(
    runtime: Runtime, actor: Actor, project_id: uuid.UUID, min_position: int | None
) -> dict[str, int] | None:
    """The board's counts if the cache has them (None: read the view); NotFound when `actor` may
    not see the project, or it does not exist."""
    board = await _hit(runtime, TaskBoard.name, f"board:{project_id}", min_position)
    if board is None:
        return None
    counts, members = board
    _board_visible(actor, project_id, members)
    return dict(counts)


async def read_board(runtime: Runtime, actor: Actor, project_id: uuid.UUID) -> dict[str, int]:
    """One Redis round trip: the checkpoint, the project's members and its counts."""
    version = await runtime.live_versions.get(TaskBoard.name)
    prefix = runtime.live_versions.prefix_of(TaskBoard.name, version)
    ticket = runtime.cache.ticket()
    async with runtime.redis.pipeline(transaction=False) as pipe:
        pipe.get(f"{prefix}checkpoint")
        pipe.smembers(f"{prefix}members:{project_id}")
        pipe.hgetall(f"{prefix}board:{project_id}")
        at, raw_members, raw = await pipe.execute()
    members = sorted(_text(m) for m in raw_members)
    counts = {_text(k): int(v) for k, v in raw.items()}
    if members:  # a project has members from its creation: none is no project, not kept
        tokens = [f"board:{project_id}", f"members:{project_id}"]
        view = (TaskBoard.name, version)
        keep(runtime.cache, ticket, view, f"board:{project_id}", (counts, members), int(at or 0), tokens)
    _board_visible(actor, project_id, members)
    return counts


def _board_visible(actor: Actor, project_id: uuid.UUID, members: list[str]) -> None:
    """A project has members from its creation on (its owner): none means no such project."""
    if not members or not access.may_see_project(actor, is_member=str(actor.user_id) in members):
        raise NotFound(f"project {project_id} not found")


async def cached_product(runtime: Runtime, sku: str, min_position: int | None) -> bytes | None:
    found: bytes | None = await _hit(runtime, CatalogCache.name, f"product:{sku}", min_position)
    return found


async def read_product(runtime: Runtime, sku: str) -> bytes | None:
    """The product's JSON (as the view keeps it), or None; one Redis round trip."""
    version = await runtime.live_versions.get(CatalogCache.name)
    prefix = runtime.live_versions.prefix_of(CatalogCache.name, version)
    ticket = runtime.cache.ticket()
    async with runtime.redis.pipeline(transaction=False) as pipe:
        pipe.get(f"{prefix}checkpoint")
        pipe.hget(f"{prefix}product:{sku}", "json")
        at, raw = await pipe.execute()
    if raw is None:
        return None
    found = bytes(raw) if not isinstance(raw, str) else raw.encode()
    keep(runtime.cache, ticket, (CatalogCache.name, version), f"product:{sku}", found, int(at or 0), [f"product:{sku}"])
    return found


def _page_key(f: CatalogFilter) -> str:
    return "page:" + msgspec.json.encode(f).decode()


async def cached_page(runtime: Runtime, f: CatalogFilter, min_position: int | None) -> tuple[list[Any], bool] | None:
    """A first page of a listing if the cache has it (later pages are read from the view only)."""
    if f.after is not None:
        return None
    page: tuple[list[Any], bool] | None = await _hit(runtime, CatalogCache.name, _page_key(f), min_position)
    return page


async def read_page(runtime: Runtime, f: CatalogFilter, product: type[Any]) -> tuple[list[Any], bool]:
    """A page of a listing from the view (one script call), kept if it is a first page."""
    version = await runtime.live_versions.get(CatalogCache.name)
    prefix = runtime.live_versions.prefix_of(CatalogCache.name, version)
    ticket = runtime.cache.ticket()
    page = await listing_page(runtime.script, prefix, f, product)
    if f.after is None:
        tokens = [page.listing, *(f"product:{p.sku}" for p in page.read)]
        view = (CatalogCache.name, version)
        keep(runtime.cache, ticket, view, _page_key(f), (page.items, page.more), page.position, tokens)
    return page.items, page.more


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

"""Snapshots are checked, not trusted: a snapshot edited by someone with the owner's rights is
ignored by the write side (which replays the stream instead), recorded in `ignored_snapshots`, and
reported by verify's snapshot check."""

from __future__ import annotations

import dataclasses
import uuid

import psycopg

from commands.base import Actor, Context
from domain.identity import Role
from infra.bootstrap import Chronicle, bootstrap
from infra.settings import Settings
from tests.conftest import as_owner


def test_an_edited_snapshot_is_ignored_reported_and_the_task_loads_by_replay(
    fresh_database_url: str, settings: Settings
) -> None:
    own = dataclasses.replace(settings, database_url=fresh_database_url, snapshot_check_rate=1.0)
    app = bootstrap(own)
    owner = app.identity.register(Context("t"), f"{uuid.uuid4().hex[:6]}@example.com", "Owner", "long enough pw").id
    ctx = Context("t", actor=Actor(owner, frozenset({Role.MEMBER})))
    project = app.work.create_project(ctx, "Snapshots", None).id
    task = app.work.create_task(ctx, project, "edit 0").id
    for i in range(1, 105):
        app.work.edit_task(ctx, task, {"title": f"edit {i}"})
    assert app.audit.check_snapshots() == []  # an untouched snapshot agrees with its replay
    assert app.work.load_task(task, fresh=True).title == "edit 104" and not app.work.distrusted
    app.close()
    with psycopg.connect(as_owner(fresh_database_url)) as conn:
        assert conn.execute("SELECT version FROM snapshots WHERE stream_id = %s", (task,)).fetchall() == [(100,)]
        conn.execute(
            "UPDATE snapshots SET data = convert_to(replace(convert_from(data, 'UTF8'), '\"normal\"',"
            " '\"urgent\"'), 'UTF8') WHERE stream_id = %s",
            (task,),
        )

    def priority_from_a_new_process(rate: float) -> tuple[str, Chronicle]:
        chronicle = bootstrap(dataclasses.replace(own, snapshot_check_rate=rate))
        return str(chronicle.work.load_task(task, fresh=True).priority), chronicle

    trusting, unchecked = priority_from_a_new_process(0.0)
    unchecked.close()
    assert trusting == "urgent"  # the edit took: a snapshot nobody checks is believed
    ignored_before = _ignored(fresh_database_url)
    assert ignored_before == []
    priority, checked = priority_from_a_new_process(1.0)
    try:
        assert priority == "normal" and checked.work.load_task(task).title == "edit 104"
        assert _ignored(fresh_database_url) == [(task, 100, "write side")]
        assert task in checked.work.distrusted
        assert checked.work.load_task(task, fresh=True).priority == "normal"  # and on every later load
        found = checked.audit.check_snapshots()
        assert [(f.stream_id, f.version) for f in found] == [(task, 100)]
    finally:
        checked.close()


def _ignored(url: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT stream_id, version, found_by FROM ignored_snapshots").fetchall()

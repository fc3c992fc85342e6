"""A batch's view writes are coalesced without changing what they mean."""

from __future__ import annotations

from infra.views.redisstore import BufferedRedisView
from infra.views.sqlstore import BufferedSqlView

TABLES = {"tasks": "v.tasks_v1", "members": "v.members_v1"}
KEYS = {"tasks": ("id",), "members": ("user_id", "project_id")}


def test_an_update_of_a_row_inserted_in_the_batch_folds_into_the_insert() -> None:
    view = BufferedSqlView(TABLES, KEYS)
    view.insert("tasks", {"id": 1, "title": "a", "status": "todo", "count": 0})
    view.update("tasks", (1,), {"status": "done"})
    view.increment("tasks", (1,), "count", 2)
    view.update("tasks", (1,), {"title": "b"})
    assert view.statements() == [
        (
            "INSERT INTO v.tasks_v1 (id, title, status, count) VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
            [(1, "b", "done", 2)],
        )
    ]


def test_updates_of_existing_rows_group_by_shape_and_increments_add_up() -> None:
    view = BufferedSqlView(TABLES, KEYS)
    view.update("tasks", (1,), {"status": "done"})
    view.update("tasks", (2,), {"status": "todo"})
    view.increment("tasks", (1,), "count", 1)
    view.increment("tasks", (1,), "count", 1)
    view.increment("tasks", (2,), "count", -1)
    ((sql, rows),) = view.statements()
    assert sql == "UPDATE v.tasks_v1 SET status = %s, count = count + %s WHERE id = %s"
    assert rows == [("done", 2, 1), ("todo", -1, 2)]


def test_the_last_write_of_a_column_wins_and_a_set_cancels_a_pending_increment() -> None:
    view = BufferedSqlView(TABLES, KEYS)
    view.increment("tasks", (1,), "count", 5)
    view.update("tasks", (1,), {"count": 7})
    view.increment("tasks", (1,), "count", 1)
    assert view.statements() == [("UPDATE v.tasks_v1 SET count = %s WHERE id = %s", [(8, 1)])]


def test_delete_then_insert_replaces_and_insert_then_delete_deletes() -> None:
    view = BufferedSqlView(TABLES, KEYS)
    view.delete("members", ("u", "p"))
    view.insert("members", {"user_id": "u", "project_id": "p"})
    view.insert("members", {"user_id": "v", "project_id": "p"})
    view.delete("members", ("v", "p"))
    view.update("members", ("v", "p"), {"user_id": "w"})
    statements = view.statements()
    assert statements[0] == (
        "DELETE FROM v.members_v1 WHERE user_id = %s AND project_id = %s",
        [("u", "p"), ("v", "p")],
    )
    assert statements[1][1] == [("u", "p")] and len(statements) == 2


def test_raw_statements_come_after_row_operations_in_their_order() -> None:
    view = BufferedSqlView(TABLES, KEYS)
    view.execute("UPDATE {tasks} SET a = 1 WHERE id = %s", (1,))
    view.insert("tasks", {"id": 1})
    view.execute("UPDATE {tasks} SET a = 2 WHERE id = %s", (1,))
    assert [sql for sql, _ in view.statements()] == [
        "INSERT INTO v.tasks_v1 (id) VALUES (%s) ON CONFLICT (id) DO NOTHING",
        "UPDATE v.tasks_v1 SET a = 1 WHERE id = %s",
        "UPDATE v.tasks_v1 SET a = 2 WHERE id = %s",
    ]


def test_redis_operations_coalesce_per_key() -> None:
    view = BufferedRedisView("ns:{b:v1}:", {"task:1": {"status": "todo"}})
    view.hincrby("board:p", "status:todo", 1)
    view.hincrby("board:p", "status:todo", 1)
    view.hincrby("board:p", "status:todo", -1)
    view.hset("task:1", {"status": "done"})
    view.hset("task:1", {"status": "todo", "assignee": "a"})
    view.zadd("open:a", "t1", 1.5)
    view.zrem("open:a", "t1")
    view.zadd("open:a", "t2", 2.0)
    view.sadd("members:p", "a")
    view.srem("members:p", "a")
    view.delete("gone")
    view.hincrby("gone", "n", 3)
    assert view.hash("task:1") == {"status": "todo", "assignee": "a"}
    keys, ops = view.encoded()
    assert keys == [
        "ns:{b:v1}:board:p",
        "ns:{b:v1}:task:1",
        "ns:{b:v1}:open:a",
        "ns:{b:v1}:members:p",
        "ns:{b:v1}:gone",
    ]
    import json

    assert json.loads(ops) == [
        ["HINCRBY", 2, "status:todo", "1"],
        ["HSET", 3, "status", "todo", "assignee", "a"],
        ["ZREM", 4, "t1"],
        ["ZADD", 4, "2.0", "t2"],
        ["SREM", 5, "a"],
        ["DEL", 6],
        ["HSET", 6, "n", "3"],
    ]

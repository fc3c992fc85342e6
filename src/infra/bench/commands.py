"""`chronicle bench commands`: a command route that loads, decides and appends (task edit), driven
over HTTP by many concurrent connections, against a ceiling served the same way in the same run
(a bare Litestar POST doing one pooled INSERT). Both servers run at once on their own ports; the
load alternates between them in rounds. Everything runs in a scratch database dropped afterwards."""

from __future__ import annotations

import random
from typing import Any

import psycopg

from infra.bench.ceiling import TABLE
from infra.bench.load import LoadResult, drive
from infra.bench.stack import api_argv, ceiling_argv, prepare, scratch_env, serve
from infra.settings import Settings


class EditRandomTask:
    """Each request edits one of the prepared tasks, chosen at random, to a new title."""

    def __init__(self, token: str, task_ids: list[str]) -> None:
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.task_ids = task_ids

    def __call__(self, rng: random.Random) -> tuple[str, str, bytes, dict[str, str]]:
        task = rng.choice(self.task_ids)
        body = b'{"title":"Edited %d"}' % rng.randrange(1 << 30)
        return "POST", f"/v1/tasks/{task}/edit", body, self.headers


class InsertRow:
    headers = {"Content-Type": "application/json"}

    def __call__(self, rng: random.Random) -> tuple[str, str, bytes, dict[str, str]]:
        return "POST", "/ceiling", b'{"title":"Edited %d"}' % rng.randrange(1 << 30), self.headers


def _prepare(base: str, tasks: int) -> EditRandomTask:
    prepared = prepare(base, tasks)
    return EditRandomTask(prepared.token, prepared.task_ids)


def bench_commands(
    settings: Settings, seconds: float, connections: int = 32, workers: int = 1, tasks: int = 500, rounds: int = 3
) -> dict[str, Any]:
    with scratch_env(settings) as env:
        with psycopg.connect(env["CHRONICLE_DATABASE_URL"], autocommit=True) as conn:
            conn.execute(TABLE)
        with (
            serve(api_argv(workers), env, "/schema/openapi.json") as api,
            serve(ceiling_argv(workers), env, "/") as ceiling,
        ):
            edit = _prepare(api, tasks)
            drive(api, edit, connections, 1.0)  # warm-up
            drive(ceiling, InsertRow(), connections, 1.0)
            command, bare = LoadResult(0.0), LoadResult(0.0)
            for _ in range(rounds):
                command.merge(drive(api, edit, connections, seconds / rounds))
                bare.merge(drive(ceiling, InsertRow(), connections, seconds / rounds))
    return {
        "bench": "commands",
        "route": "POST /v1/tasks/{id}/edit",
        "seconds": seconds,
        "connections": connections,
        "workers": workers,
        "command": command.summary(),
        "ceiling": bare.summary(),
        "ratio": round(command.rate() / bare.rate(), 3),
    }

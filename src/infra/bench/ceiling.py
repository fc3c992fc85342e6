"""The ceiling for `chronicle bench commands`: a bare Litestar POST that does one pooled INSERT
and nothing else, served by the same server (granian) as the real API."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import msgspec
from litestar import Litestar, post
from litestar.params import Body
from psycopg_pool import AsyncConnectionPool

TABLE = "CREATE TABLE IF NOT EXISTS bench_ceiling (id uuid PRIMARY KEY, title text NOT NULL, at timestamptz NOT NULL)"


class Edit(msgspec.Struct):
    title: str


class Inserted(msgspec.Struct):
    id: uuid.UUID


def create_app() -> Litestar:
    pool = AsyncConnectionPool(os.environ["CHRONICLE_DATABASE_URL"], min_size=16, max_size=16, open=False,
                               kwargs={"autocommit": True})

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await pool.open(wait=True)
        yield
        await pool.close()

    @post("/ceiling", status_code=200)
    async def insert(data: Annotated[Edit, Body()]) -> Inserted:
        row_id = uuid.uuid4()
        async with pool.connection() as conn:
            await conn.execute("INSERT INTO bench_ceiling (id, title, at) VALUES (%s, %s, now())", (row_id, data.title))
        return Inserted(row_id)

    return Litestar([insert], lifespan=[lifespan])

"""The ceilings for `chronicle bench commands` (a bare Litestar POST that does one pooled INSERT and
nothing else) and `chronicle bench queries` (a bare GET returning a constant Struct), served by the
same server (granian) as the real API."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import msgspec
import redis.asyncio as aioredis
from litestar import Litestar, get, post
from litestar.params import Body
from psycopg_pool import AsyncConnectionPool

TABLE = "CREATE TABLE IF NOT EXISTS bench_ceiling (id uuid PRIMARY KEY, title text NOT NULL, at timestamptz NOT NULL)"


class Edit(msgspec.Struct):
    title: str


class Inserted(msgspec.Struct):
    id: uuid.UUID


class Constant(msgspec.Struct):
    id: uuid.UUID
    title: str
    status: str
    version: int


CONSTANT = Constant(uuid.UUID(int=1), "A constant task", "todo", 1)


def create_app() -> Litestar:
    pool = AsyncConnectionPool(
        os.environ["CHRONICLE_DATABASE_URL"], min_size=16, max_size=16, open=False, kwargs={"autocommit": True}
    )

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

    @get("/constant")
    async def constant() -> Constant:
        return CONSTANT

    redis_client = aioredis.from_url(os.environ["CHRONICLE_REDIS_URL"])

    @get("/constant/after-redis")
    async def after_redis() -> Constant:
        """The constant after one Redis read: what any Redis-backed route must pay at least."""
        await redis_client.hgetall("chronicle-bench-nothing")
        return CONSTANT

    @get("/constant/after-sql")
    async def after_sql() -> Constant:
        """The constant after one pooled SELECT: what any SQL-backed route must pay at least."""
        async with pool.connection() as conn:
            await conn.execute("SELECT 1")
        return CONSTANT

    return Litestar([insert, constant, after_redis, after_sql], lifespan=[lifespan])

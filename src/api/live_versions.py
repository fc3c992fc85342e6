"""Which version of each projection the queries of one API process read."""

from __future__ import annotations

import time
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from infra.settings import LIVE_VERSION_CACHE_S
from infra.views.l1 import L1
from infra.views.redisstore import redis_prefix
from projections import all_projections
from projections.base import Projection


class LiveVersions:
    """The live version of each projection, remembered for `ttl` seconds: it changes only when a
    rebuild switches versions, and the old version is kept for longer than that after a switch
    (`infra.views.operations.GRACE_S` is derived from the same constant)."""

    ttl = LIVE_VERSION_CACHE_S

    def __init__(
        self, views: AsyncConnectionPool[AsyncConnection[Any]], namespace: str, cache: L1 | None = None
    ) -> None:
        self.views, self.namespace, self.cache = views, namespace, cache
        self.projections: dict[str, Projection] = {p.name: p for p in all_projections()}
        self._known: dict[str, tuple[float, int]] = {}

    async def get(self, projection: str) -> int:
        now = time.monotonic()
        known = self._known.get(projection)
        announced = self.cache.live.get(projection, 0) if self.cache is not None else 0
        if known is not None and now - known[0] < self.ttl:
            if announced > known[1]:
                self.learn(projection, announced)  # a switch announced since we looked
                return announced
            return known[1]
        async with self.views.connection() as conn:
            row = await (
                await conn.execute("SELECT live_version FROM projections WHERE projection = %s", (projection,))
            ).fetchone()
        version = int(row[0]) if row else self.projections[projection].version
        self.learn(projection, version)
        return version

    def learn(self, projection: str, version: int) -> None:
        """A live version read elsewhere (a switch can happen within the second we remember). Live
        versions only grow (a rebuild switches to a higher one), so a read that started before a
        switch and ends after another request learned of it cannot bring the old version back."""
        known = self._known.get(projection)
        self._known[projection] = (time.monotonic(), max(version, known[1]) if known else version)
        if known is not None and version > known[1] and self.cache is not None:
            self.cache.older_than(projection, version)  # switched: the old version is not read again

    async def prefix(self, projection: str) -> str:
        """The key prefix of a Redis projection's live version."""
        return self.prefix_of(projection, await self.get(projection))

    def prefix_of(self, projection: str, version: int) -> str:
        return redis_prefix(self.namespace, self.projections[projection], version)

"""Redis views: a batch's operations coalesced per key and applied in one Lua script with the
checkpoint; all keys of a view version share one hash tag, so the script stays cluster-safe."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import redis.asyncio as aioredis

from infra.eventstore.envelope import EventEnvelope
from infra.views.base import Fingerprint, StaleCheckpoint
from projections.base import EventConsumer, RedisProjection

DUMP_CHUNK = 500
# KEYS[1] is the checkpoint; ARGV: expected checkpoint, new checkpoint, and the operations as one
# JSON array of [command, key index, arguments...]. All keys of a view share one hash tag.
APPLY_BATCH = """
local current = redis.call('GET', KEYS[1]) or '0'
if current ~= ARGV[1] then
  return redis.error_reply('STALE ' .. current)
end
local allowed = {HSET=true, HDEL=true, HINCRBY=true, ZADD=true, ZREM=true, SADD=true, SREM=true, DEL=true}
for _, op in ipairs(cjson.decode(ARGV[3])) do
  if not allowed[op[1]] then return redis.error_reply('FORBIDDEN ' .. tostring(op[1])) end
  redis.call(op[1], KEYS[op[2]], unpack(op, 3))
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""


def redis_prefix(namespace: str, projection: EventConsumer, version: int) -> str:
    return f"{namespace}:{{{projection.name}:v{version}}}:"


@dataclass
class _KeyOps:
    """What a batch does to one key, coalesced: the last write of a field or member wins,
    increments add up, a delete clears what came before it."""

    deleted: bool = False
    hset: dict[str, str] = field(default_factory=dict)
    hincr: dict[str, int] = field(default_factory=dict)
    hdel: set[str] = field(default_factory=set)
    zadd: dict[str, float] = field(default_factory=dict)
    zrem: set[str] = field(default_factory=set)
    sadd: set[str] = field(default_factory=set)
    srem: set[str] = field(default_factory=set)

    def commands(self) -> list[list[str]]:
        found: list[list[str]] = [["DEL"]] if self.deleted else []
        if self.hdel:
            found.append(["HDEL", *sorted(self.hdel)])
        if self.hset:
            found.append(["HSET", *[x for kv in self.hset.items() for x in kv]])
        found += [["HINCRBY", f, str(d)] for f, d in self.hincr.items()]  # a zero still makes the field, as unbatched
        if self.zrem:
            found.append(["ZREM", *sorted(self.zrem)])
        if self.zadd:
            found.append(["ZADD", *[x for m, s in self.zadd.items() for x in (repr(s), m)]])
        if self.srem:
            found.append(["SREM", *sorted(self.srem)])
        if self.sadd:
            found.append(["SADD", *sorted(self.sadd)])
        return found


class BufferedRedisView:
    """Collects a batch's operations, coalesced per key, and keeps the hashes it read up to date."""

    def __init__(self, prefix: str, hashes: dict[str, dict[str, str]]) -> None:
        self.prefix = prefix
        self.hashes = hashes
        self.pending: dict[str, _KeyOps] = {}

    def _ops(self, key: str) -> _KeyOps:
        return self.pending.setdefault(key, _KeyOps())

    def hash(self, key: str) -> dict[str, str]:
        if key not in self.hashes:
            raise KeyError(f"{key} was not declared by reads(); the projector did not fetch it")
        return dict(self.hashes[key])

    def hset(self, key: str, mapping: Mapping[str, str | int | float]) -> None:
        ops, values = self._ops(key), {k: str(v) for k, v in mapping.items()}
        self.hashes.setdefault(key, {}).update(values)
        for name, value in values.items():
            ops.hset[name] = value
            ops.hincr.pop(name, None)
            ops.hdel.discard(name)

    def hdel(self, key: str, *names: str) -> None:
        ops = self._ops(key)
        for name in names:
            self.hashes.get(key, {}).pop(name, None)
            ops.hset.pop(name, None)
            ops.hincr.pop(name, None)
            ops.hdel.add(name)

    def hincrby(self, key: str, name: str, delta: int) -> None:
        ops = self._ops(key)
        current = self.hashes.setdefault(key, {})
        current[name] = str(int(current.get(name, "0")) + delta)
        if name in ops.hset or name in ops.hdel or ops.deleted:
            ops.hset[name] = str(int(ops.hset.get(name, "0")) + delta)
            ops.hdel.discard(name)
        else:
            ops.hincr[name] = ops.hincr.get(name, 0) + delta

    def zadd(self, key: str, member: str, score: float) -> None:
        ops = self._ops(key)
        ops.zadd[member] = score
        ops.zrem.discard(member)

    def zrem(self, key: str, member: str) -> None:
        ops = self._ops(key)
        ops.zadd.pop(member, None)
        ops.zrem.add(member)

    def sadd(self, key: str, member: str) -> None:
        ops = self._ops(key)
        ops.sadd.add(member)
        ops.srem.discard(member)

    def srem(self, key: str, member: str) -> None:
        ops = self._ops(key)
        ops.sadd.discard(member)
        ops.srem.add(member)

    def delete(self, key: str) -> None:
        self.hashes.pop(key, None)
        self.pending[key] = _KeyOps(deleted=True)

    def encoded(self) -> tuple[list[str], bytes]:
        """The keys (for KEYS, after the checkpoint) and the operations as one JSON argument."""
        keys, ops = [], []
        for index, (key, pending) in enumerate(self.pending.items(), start=2):
            keys.append(self.prefix + key)
            ops += [[command[0], index, *command[1:]] for command in pending.commands()]
        return keys, msgspec.json.encode(ops)


class RedisStore:
    def __init__(self, client: aioredis.Redis, namespace: str, projection: RedisProjection, version: int) -> None:
        self.client, self.projection, self.version = client, projection, version
        self.prefix = redis_prefix(namespace, projection, version)
        self.checkpoint_key = self.prefix + "checkpoint"
        self.touched: set[str] | None = set()
        """The keys (relative to the view) the last `apply` wrote: the tokens of infra.views.l1."""
        self.script = client.register_script(APPLY_BATCH)

    async def prepare(self) -> None:
        return None

    async def publish_views(self) -> None:
        return None

    async def checkpoint(self) -> int:
        value = await self.client.get(self.checkpoint_key)
        return int(value) if value else 0

    async def apply(self, envelopes: Sequence[EventEnvelope], expected: int, new: int) -> None:
        handled = [e for e in envelopes if e.type in self.projection.handles]
        reads = sorted({key for e in handled for key in self.projection.reads(e)})
        hashes: dict[str, dict[str, str]] = {}
        if reads:
            async with self.client.pipeline(transaction=False) as pipe:
                for key in reads:
                    pipe.hgetall(self.prefix + key)
                results = await pipe.execute()
            hashes = {
                key: {_s(k): _s(v) for k, v in result.items()} for key, result in zip(reads, results, strict=True)
            }
        view = BufferedRedisView(self.prefix, hashes)
        for envelope in handled:
            self.projection.apply(envelope, view)
        keys, ops = view.encoded()
        self.touched = set(view.pending)
        try:
            await self.script(keys=[self.checkpoint_key, *keys], args=[str(expected), str(new), ops])
        except aioredis.ResponseError as e:
            if str(e).startswith("STALE"):
                raise StaleCheckpoint(f"{self.projection.name} v{self.version}: {e}") from None
            raise

    async def fingerprint(self) -> Fingerprint:
        """Keys grouped by kind (`board`, `task`, `open`, ...), the checkpoint left out."""
        entries: dict[str, list[bytes]] = {}
        async for raw in self.client.scan_iter(match=self.prefix + "*", count=1000):
            key = raw.decode() if isinstance(raw, bytes) else raw
            relative = key[len(self.prefix) :]
            if relative == "checkpoint":
                continue
            entries.setdefault(relative.split(":", 1)[0], []).append(key.encode())
        result = Fingerprint()
        for kind, keys in entries.items():
            digest = hashlib.sha256()
            ordered = sorted(keys)
            for start in range(0, len(ordered), DUMP_CHUNK):
                chunk = ordered[start : start + DUMP_CHUNK]
                for key, dumped in zip(chunk, await _dump(self.client, chunk), strict=True):
                    digest.update(key[len(self.prefix.encode()) :] + b"=" + dumped)
            result.counts[kind], result.checksums[kind] = len(keys), digest.hexdigest()
        return result

    async def drop(self) -> None:
        """Deletes every key of the version, the checkpoint included."""
        batch: list[Any] = []
        async for key in self.client.scan_iter(match=self.prefix + "*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                await self.client.delete(*batch)
                batch = []
        if batch:
            await self.client.delete(*batch)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _dump(client: aioredis.Redis, keys: list[bytes]) -> list[bytes]:
    """Each key's content as comparable bytes, in two pipelined round trips for the whole chunk."""
    async with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.type(key)
        kinds = [_b(k).decode() for k in await pipe.execute()]
    async with client.pipeline(transaction=False) as pipe:
        for key, kind in zip(keys, kinds, strict=True):
            if kind == "hash":
                pipe.hgetall(key)
            elif kind == "zset":
                pipe.zrange(key, 0, -1, withscores=True)
            elif kind == "string":
                pipe.get(key)
            else:
                pipe.type(key)
        values = await pipe.execute()
    dumped = []
    for kind, value in zip(kinds, values, strict=True):
        if kind == "hash":
            dumped.append(repr(sorted((_b(k), _b(v)) for k, v in value.items())).encode())
        elif kind == "zset":
            dumped.append(repr([(_b(pair[0]), pair[1]) for pair in value]).encode())
        elif kind == "string":
            dumped.append(_b(value or b""))
        else:
            dumped.append(kind.encode())
    return dumped


def _b(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()

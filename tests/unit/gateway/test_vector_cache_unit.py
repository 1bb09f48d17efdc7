"""VectorCache's per-tenant bookkeeping (app/gateway/vectors.py), over a stand-in for Redis."""

from __future__ import annotations

import asyncio
from typing import Any

from app.gateway.vectors import VectorCache


class FakeRedis:
    """A tenant with no vectors yet; each index read waits on `gate` (when set) and is counted."""

    def __init__(self) -> None:
        self.index_reads = 0
        self.gate: asyncio.Event | None = None

    async def hmget(self, key: str, fields: list[str]) -> list[Any]:
        return [b"1", b"0"]

    async def zrangebyscore(self, key: str, low: Any, high: Any) -> list[bytes]:
        self.index_reads += 1
        if self.gate is not None:
            await self.gate.wait()
        return []

    async def mget(self, keys: list[str]) -> list[Any]:
        return [None] * len(keys)


def cache(redis: FakeRedis, max_bytes: int = 1 << 20) -> VectorCache:
    return VectorCache(redis, "m", 4, max_bytes)  # type: ignore[arg-type]


async def test_tenant_locks_do_not_outlive_their_searches() -> None:
    vc = cache(FakeRedis(), max_bytes=0)  # nothing is kept: every tenant is loaded afresh
    for i in range(1000):
        await vc.get(f"t-{i}")
    assert len(vc._locks) == 0  # one lock per tenant ever searched, before


async def test_concurrent_searches_of_a_tenant_load_it_once() -> None:
    redis = FakeRedis()
    redis.gate = asyncio.Event()
    vc = cache(redis)
    gets = [asyncio.ensure_future(vc.get("t")) for _ in range(5)]
    deadline = asyncio.get_running_loop().time() + 5
    while redis.index_reads == 0:  # the first one holds the lock, reading the index
        assert asyncio.get_running_loop().time() < deadline, "no search reached the index"
        await asyncio.sleep(0)
    assert len(vc._locks) == 1
    redis.gate.set()
    results = await asyncio.gather(*gets)
    assert redis.index_reads == 1  # the others waited for it and found the tenant current
    assert all(r is results[0] for r in results)

"""A Redis pool that waits: more concurrent requests than connections queue for one (up to
MEMSTREAM_REDIS_POOL_TIMEOUT_S) instead of failing; past the bound, a clear error and a 503."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import REGISTRY
from redis.exceptions import ConnectionError as RedisConnectionError

from app.redis_client import create_redis
from app.settings import Settings
from tests.support.gateway import running
from tests.support.stack import Stack


def gauge(state: str) -> float:
    value = REGISTRY.get_sample_value("memstream_redis_pool_connections", {"state": state})
    return value or 0.0


async def test_a_hundred_concurrent_reads_share_two_connections(stack: Stack, tenant: str) -> None:
    client = create_redis(stack.settings(redis_max_connections=2, redis_pool_timeout_s=10))
    try:
        await client.set(f"ms:{{{tenant}}}:probe", "v")
        waiting: list[float] = []

        async def read() -> str | None:
            waiting.append(gauge("waiting"))
            value: str | None = await client.get(f"ms:{{{tenant}}}:probe")
            return value

        results = await asyncio.gather(*[read() for _ in range(100)])
        assert results == ["v"] * 100
        assert max(waiting) >= 1  # requests did queue for a connection
        assert gauge("waiting") == 0
    finally:
        await client.aclose()


async def held(settings: Settings) -> tuple[float, Exception]:
    """Hold the pool's only connection with a blocking read, then ask for another."""
    client = create_redis(settings)
    try:
        holder = asyncio.create_task(client.blpop([f"ms:{{pool}}:never-{time.time_ns()}"], timeout=3))
        await asyncio.sleep(0)  # let the holder take the connection first
        started = time.monotonic()
        with pytest.raises(RedisConnectionError) as info:
            await client.get("ms:{pool}:other")
        holder.cancel()
        return time.monotonic() - started, info.value
    finally:
        await client.aclose()


async def test_past_the_bound_the_wait_ends_in_a_clear_error(stack: Stack) -> None:
    waited, exc = await held(stack.settings(redis_max_connections=1, redis_pool_timeout_s=0.3))
    assert 0.25 <= waited < 2.5 and "No connection available" in str(exc)


async def test_the_gateway_answers_503_when_the_pool_stays_full(stack: Stack, tenant: str) -> None:
    settings = stack.settings(redis_max_connections=1, redis_pool_timeout_s=0.3)
    async with running(settings) as gw:
        holder = asyncio.create_task(gw.services.redis.blpop([f"ms:{{{tenant}}}:never"], timeout=3))
        await asyncio.sleep(0.05)
        r = await gw.get(tenant, "/api/v2/memory/retrieve", params={"memory_id": "m"})
        holder.cancel()
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "hotset_unavailable"

"""The hotset's Lua loader on a real Redis: a script runs whether or not the server has it cached,
called on a client or queued in a pipeline."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from sinks.hotset import Lua, keys, script
from sinks.hotset.scripts import source
from tests.support.stack import Stack


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[aioredis.Redis]:
    c = stack.async_redis()
    yield c
    await c.aclose()


async def test_a_script_reloads_after_the_cache_is_flushed(client: aioredis.Redis, tenant: str) -> None:
    await client.zadd(keys.recent(tenant), {"a": 1, "b": 2, "c": 3})
    ids = script(client, Lua.CONTEXT_IDS)
    await client.script_flush()
    assert await client.script_exists(ids.sha) == [False]
    assert await ids(keys=[keys.recent(tenant)], args=[0, 2]) == [[3, ["c", "b"]]]
    assert await client.script_exists(ids.sha) == [True]
    await client.script_flush()
    assert await ids(keys=[keys.recent(tenant)], args=[1, 1]) == [[3, ["b"]]]


async def test_a_script_runs_in_a_pipeline_after_the_cache_is_flushed(client: aioredis.Redis, tenant: str) -> None:
    await client.zadd(keys.recent(tenant), {"a": 1, "b": 2})
    ids = script(client, Lua.CONTEXT_IDS)
    await client.script_flush()
    pipe = client.pipeline(transaction=False)
    await ids(keys=[keys.recent(tenant)], args=[0, 1], client=pipe)
    pipe.zcard(keys.recent(tenant))
    assert await pipe.execute() == [[[2, ["b"]]], 2]


async def test_every_script_compiles_on_the_server(client: aioredis.Redis) -> None:
    for name in Lua:
        sha = await client.script_load(source(name))
        assert script(client, name).sha == sha

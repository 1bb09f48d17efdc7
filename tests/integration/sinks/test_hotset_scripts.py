"""The hotset's Lua loader on a real Redis: a script runs whether or not the server has it cached,
called on a client or queued in a pipeline."""

from __future__ import annotations

import json
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
    await client.set(keys.memory(tenant, "c"), "value of c")
    pages = script(client, Lua.CONTEXT_PAGES)
    prefix = keys.memory(tenant, "")
    await client.script_flush()
    assert await client.script_exists(pages.sha) == [False]
    gen = keys.standing_generation(tenant)
    reply = await pages(keys=[gen, keys.recent(tenant)], args=[prefix, "", 0, 0, 2])
    assert reply == ["0", [[3, ["c", "b"], ["value of c", None]]]]
    assert await client.script_exists(pages.sha) == [True]
    await client.script_flush()
    assert await pages(keys=[gen, keys.recent(tenant)], args=[prefix, "", 0, 1, 1]) == ["0", [[3, ["b"], [None]]]]


async def test_a_script_runs_in_a_pipeline_after_the_cache_is_flushed(client: aioredis.Redis, tenant: str) -> None:
    await client.zadd(keys.recent(tenant), {"a": 1, "b": 2})
    pages = script(client, Lua.CONTEXT_PAGES)
    await client.script_flush()
    pipe = client.pipeline(transaction=False)
    await pages(
        keys=[keys.standing_generation(tenant), keys.recent(tenant)],
        args=[keys.memory(tenant, ""), "", 0, 0, 1],
        client=pipe,
    )
    pipe.zcard(keys.recent(tenant))
    assert await pipe.execute() == [["0", [[2, ["b"], [None]]]], 2]


async def test_every_script_compiles_on_the_server(client: aioredis.Redis) -> None:
    for name in Lua:
        sha = await client.script_load(source(name))
        assert script(client, name).sha == sha


async def test_context_pages_return_each_memory_once_however_many_indexes_name_it(
    client: aioredis.Redis, tenant: str
) -> None:
    from app.gateway.reads import HotsetReader
    from sinks.hotset import layout

    await client.zadd(keys.recent(tenant), {"a": 1, "b": 2})
    await client.zadd(keys.by_session(tenant, "s"), {"b": 2, "gone": 3})
    body = {
        "tenant_id": "t",
        "memory_id": "b",
        "content": {"text": "hello"},
        "occurred_at": "2026-01-01T00:00:00+00:00",
    }
    value = layout.encode("1" * 32, json.dumps(body, separators=(",", ":")))
    await client.mset({keys.memory(tenant, "a"): value.replace('"b"', '"a"'), keys.memory(tenant, "b"): value})
    indexes = [keys.recent(tenant), keys.by_session(tenant, "s")]
    gen = keys.standing_generation(tenant)
    generation, raw = await script(client, Lua.CONTEXT_PAGES)(
        keys=[gen, *indexes], args=[keys.memory(tenant, ""), "", 0, 0, 5, 0, 5]
    )
    assert generation == "0" and [r[1] for r in raw] == [["b", "a"], ["gone", "b"]]
    assert raw[1][2] == [None, None]  # "gone" is absent, "b" was returned for the first index
    reader = HotsetReader(client)
    generation, pages, slots = await reader.context_pages(tenant, [(k, 0, 5) for k in indexes])
    assert generation == "0" and pages == [(2, ["b", "a"]), (2, ["gone", "b"])]
    # The caller's standing packing is current: the first index (standing) is not read.
    await client.set(gen, "7")
    assert (await reader.context_pages(tenant, [(k, 0, 5) for k in indexes], "7", 1))[1] == [
        (-1, []),
        (2, ["gone", "b"]),
    ]
    assert (await reader.context_pages(tenant, [(k, 0, 5) for k in indexes], "6", 1))[1][0] == (2, ["b", "a"])
    assert slots["b"].present and slots["a"].present and not slots["gone"].present
    assert slots["b"].doc is not None and slots["b"].doc.text == "hello"

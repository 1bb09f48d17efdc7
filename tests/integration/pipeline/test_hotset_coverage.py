"""Where the hotset began to hold a tenant, as hotset_apply.lua records it on a real Redis (what
the gateway makes of it: tests/integration/gateway/test_search_coverage.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import orjson
import pytest
import redis

from app.models import MemoryEvent, SourcePosition
from app.pipeline import plan, prepare
from app.settings import DEFAULT_TTLS
from sinks.hotset import Hotset, keys
from tests.support.kafka import event
from tests.support.stack import Stack


@pytest.fixture
async def hotset(stack: Stack) -> AsyncIterator[Hotset]:
    client = stack.async_redis()
    yield Hotset(client, dict(DEFAULT_TTLS), 3600)
    await client.aclose()


async def apply(hotset: Hotset, events: list[tuple[int, dict[str, Any]]], partition: int = 3) -> None:
    prepared = [
        prepare(
            MemoryEvent.model_validate_json(orjson.dumps(e)), SourcePosition(topic="t", partition=partition, offset=o)
        )
        for o, e in events
    ]
    await hotset.apply(plan(prepared, await hotset.read_state(prepared), 3600))


def cover(rds: redis.Redis, tenant: str) -> dict[str, str]:
    return rds.hgetall(keys.coverage(tenant))  # type: ignore[return-value]


async def test_the_first_events_applied_mark_where_the_hotset_began(
    hotset: Hotset, rds: redis.Redis, tenant: str
) -> None:
    await apply(hotset, [(50, event(tenant, "a")), (52, event(tenant, "b", type="rule", key="k"))])
    first = cover(rds, tenant)
    assert first["cover_from"] == "3:50"
    assert int(first["ttl_min"]) == min(DEFAULT_TTLS["event"], DEFAULT_TTLS["rule"])
    await apply(hotset, [(60, event(tenant, "c"))])
    assert cover(rds, tenant)["cover_from"] == "3:50" and cover(rds, tenant)["cover_ms"] == first["cover_ms"]


async def test_a_replay_from_an_earlier_offset_covers_from_there(hotset: Hotset, rds: redis.Redis, tenant: str) -> None:
    await apply(hotset, [(50, event(tenant, "a"))])
    since = cover(rds, tenant)["cover_ms"]
    await apply(hotset, [(40, event(tenant, "z")), (50, event(tenant, "a"))])
    assert cover(rds, tenant)["cover_from"] == "3:40" and cover(rds, tenant)["cover_ms"] == since
    await apply(hotset, [(10, event(tenant, "y"))], partition=4)  # another partition: not the same offsets
    assert cover(rds, tenant)["cover_from"] == "3:40"


async def test_a_shorter_ttl_lowers_the_minimum(hotset: Hotset, rds: redis.Redis, tenant: str) -> None:
    await apply(hotset, [(5, event(tenant, "a"))])
    assert int(cover(rds, tenant)["ttl_min"]) == DEFAULT_TTLS["event"]
    await apply(hotset, [(6, event(tenant, "b", ttl_seconds=120))])
    assert cover(rds, tenant)["ttl_min"] == "120"


async def test_a_rebuild_restore_does_not_mark_coverage(hotset: Hotset, rds: redis.Redis, tenant: str) -> None:
    ev = MemoryEvent.model_validate_json(orjson.dumps(event(tenant, "r")))
    prepared = [prepare(ev, SourcePosition(topic="t", partition=0, offset=9))]
    restored = [replace(i, kind="restore") for i in plan(prepared, await hotset.read_state(prepared), 3600)]
    assert await hotset.apply(restored) == 1
    assert "cover_from" not in cover(rds, tenant)

"""A search the hotset cannot fill asks the warehouse only when the warehouse may hold more: not
for a tenant the hotset has held since its first event (app/gateway/coverage.py), on the real
worker, Redis and warehouse emulator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis

from app.models import derive_memory_id
from app.settings import Settings
from sinks.hotset import keys
from tests.support.gateway import Gateway, insert_row, running, worker_ready
from tests.support.stack import Proc, Stack
from tests.support.warehouse import query

CHECK_S = 0.05  # a gateway trusts a warehouse check this long


@pytest.fixture
async def gw(stack: Stack, warehouse_table: Settings, worker: Proc) -> Any:
    del warehouse_table, worker
    async with running(stack.settings(search_coverage_check_s=CHECK_S)) as g:
        await worker_ready(g)
        yield g


async def search(gw: Gateway, tenant: str, q: str, **params: str) -> dict[str, Any]:
    r = await gw.get(tenant, "/api/v2/memory/search", params={"q": q, "mode": "keyword", **params})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(CHECK_S)


async def test_a_tenant_held_whole_is_searched_without_the_warehouse(gw: Gateway, tenant: str) -> None:
    out = await gw.store(tenant, {"type": "event", "content": {"text": "the narwhal surfaced"}})
    await gw.store(tenant, {"type": "event", "content": {"text": "an unrelated note"}})
    body = await search(gw, tenant, "narwhal")
    assert [h["memory_id"] for h in body["results"]] == [out["memory_id"]]
    assert body["warehouse"] == "not_needed"
    # Superseded memories outlive the hotset in the warehouse: such a search always asks it.
    assert (await search(gw, tenant, "narwhal", include_superseded="true"))["warehouse"] == "used"

    # A memory the hotset never held (here: put straight into the warehouse) makes it partial.
    insert_row(gw.settings, tenant, "archived", content={"text": "archived narwhal notes"})

    async def found_archived() -> bool:
        body = await search(gw, tenant, "narwhal")
        return body["warehouse"] == "used" and "archived" in {h["memory_id"] for h in body["results"]}

    await eventually(found_archived)


async def test_after_a_redis_loss_the_older_memories_come_from_the_warehouse(
    gw: Gateway, rds: redis.Redis, tenant: str
) -> None:
    first = await gw.store(tenant, {"type": "event", "content": {"text": "walrus before the loss"}})

    async def loaded() -> bool:
        rows = query(gw.settings, "SELECT id FROM MEMORY_RECORDS WHERE tenant_id = %s", [tenant])
        return len(rows) == 1

    await eventually(loaded)
    assert (await search(gw, tenant, "walrus"))["warehouse"] == "not_needed"
    # Redis comes back empty: the tenant's memories and where the hotset began are gone.
    rds.delete(keys.coverage(tenant), keys.memory(tenant, first["memory_id"]))
    await gw.store(tenant, {"type": "event", "content": {"text": "walrus after the loss"}})
    assert rds.hget(keys.coverage(tenant), "cover_from") is not None

    async def found_both() -> bool:
        body = await search(gw, tenant, "walrus")
        return body["warehouse"] == "used" and first["memory_id"] in {h["memory_id"] for h in body["results"]}

    await eventually(found_both)


async def test_once_a_stored_memory_may_have_expired_the_warehouse_is_asked(
    gw: Gateway, rds: redis.Redis, tenant: str
) -> None:
    await gw.store(tenant, {"type": "event", "content": {"text": "a lonely dugong"}})
    assert (await search(gw, tenant, "dugong"))["warehouse"] == "not_needed"
    ttl_min = int(rds.hget(keys.coverage(tenant), "ttl_min") or 0)
    rds.hset(keys.coverage(tenant), "cover_ms", int(time.time() * 1000) - ttl_min * 1000 - 1)
    assert (await search(gw, tenant, "dugong"))["warehouse"] == "used"


async def test_a_tenant_with_history_from_elsewhere_is_partial(gw: Gateway, tenant: str) -> None:
    insert_row(gw.settings, tenant, derive_memory_id(tenant, "imported"), content={"text": "imported manatee"})
    await gw.store(tenant, {"type": "event", "content": {"text": "a new manatee"}})
    body = await search(gw, tenant, "manatee")
    assert body["warehouse"] == "used" and len(body["results"]) == 2

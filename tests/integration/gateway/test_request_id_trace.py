"""A write's request id follows it from the gateway (X-Request-ID in and out) through
memory.events and memory.records into its warehouse row, and the hotset's record."""

from __future__ import annotations

import asyncio
import uuid

import redis

from tests.support.gateway import Gateway
from tests.support.stack import stored, wait_until
from tests.support.warehouse import query


async def test_request_id_reaches_the_warehouse_row(gateway: Gateway, rds: redis.Redis, tenant: str) -> None:
    rid = f"req-{uuid.uuid4().hex}"
    r = await gateway.post(
        tenant,
        "/api/v2/memory/store",
        headers={"X-Request-ID": rid},
        json={"type": "decision", "key": "db", "content": {"text": "traced decision"}},
        params={"wait": "visible"},
    )
    assert r.status_code == 202, r.text
    assert r.headers["x-request-id"] == rid
    memory_id = r.json()["memory_id"]

    hot = await gateway.get(tenant, "/api/v2/memory/retrieve", params={"memory_id": memory_id})
    assert hot.status_code == 200 and hot.json()["source"] == "hotset"
    held = stored(rds, tenant, memory_id)
    assert held is not None and rid in held.record_json  # the hotset's record carries it too

    def row() -> list[tuple[object, ...]]:
        return query(
            gateway.settings,
            "SELECT request_id FROM MEMORY_RECORDS WHERE tenant_id = %s AND id = %s",
            [tenant, memory_id],
        )

    found = await asyncio.to_thread(wait_until, row, 120.0, 0.5)
    assert found == [(rid,)]

    # A request without an id gets one, echoed, and that one is carried instead.
    r = await gateway.post(tenant, "/api/v2/memory/store", json={"type": "event", "content": {"text": "untraced"}})
    assert r.status_code == 202
    minted, other = r.headers["x-request-id"], r.json()["memory_id"]
    assert minted and minted != rid

    def other_row() -> list[tuple[object, ...]]:
        return query(
            gateway.settings, "SELECT request_id FROM MEMORY_RECORDS WHERE tenant_id = %s AND id = %s", [tenant, other]
        )

    assert await asyncio.to_thread(wait_until, other_row, 120.0, 0.5) == [(minted,)]

"""/ready reports a cold hotset (warm marker gone while the warehouse holds memories)."""

from __future__ import annotations

import redis

from app.settings import Settings
from sinks.hotset import keys
from tests.support.gateway import insert_row, running


async def test_ready_is_degraded_with_a_reason_while_the_hotset_is_cold(
    warehouse_table: Settings, rds: redis.Redis, tenant: str
) -> None:
    insert_row(warehouse_table, tenant, "cold-1")
    marker = rds.get(keys.WARM_MARKER)
    assert marker is not None
    async with running(warehouse_table) as gw:
        try:
            rds.delete(keys.WARM_MARKER)  # what FLUSHALL or a new Redis does
            cold = (await gw.client.get("/ready")).json()
            assert cold["status"] == "degraded" and "memstream rebuild" in cold["reason"]
            assert cold["checks"]["warehouse"]["status"] == "up"
        finally:
            rds.set(keys.WARM_MARKER, marker)
        warm = (await gw.client.get("/ready")).json()
        assert warm["status"] == "ok" and warm["reason"] is None

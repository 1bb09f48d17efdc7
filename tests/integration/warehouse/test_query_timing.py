"""Warehouse statement timing and the slow-statement log, on the real connector and emulator;
the Redis pool and warehouse connection gauges on real services."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import REGISTRY

from app.gateway.warehouse import Warehouse
from app.redis_client import create_redis
from app.settings import Settings
from app.snowflake_conn import connect
from sinks.warehouse.timing import execute

SECRET = "content-that-must-not-be-logged"


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_statements_are_timed_and_slow_ones_logged_without_sql(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    before = sample("memstream_warehouse_query_seconds_count", {"statement": "test_probe"})
    conn = connect(settings)
    try:
        cur = conn.cursor()
        with caplog.at_level(logging.WARNING, logger="memstream.warehouse.slow"):
            execute(cur, "test_probe", "SELECT %s AS v", [SECRET], slow_s=3600)
            assert caplog.records == []  # under the threshold: not logged
            execute(cur, "test_probe", "SELECT %s AS v", [SECRET], slow_s=0)
            assert cur.fetchone() == (SECRET,)
            with pytest.raises(Exception):  # noqa: B017 - any connector error
                execute(cur, "test_probe", f"SELECT '{SECRET}' FROM no_such_table", slow_s=0)
    finally:
        conn.close()
    assert sample("memstream_warehouse_query_seconds_count", {"statement": "test_probe"}) == before + 3
    messages = [r.getMessage() for r in caplog.records if r.name == "memstream.warehouse.slow"]
    assert len(messages) == 2
    assert all("test_probe" in m and SECRET not in m and "SELECT" not in m for m in messages)
    assert "(ok, query id " in messages[0] and "(error, " in messages[1]


def test_gateway_warehouse_connection_gauges(settings: Settings) -> None:
    labels = {"client": "gateway", "state": "open"}
    before = sample("memstream_warehouse_connections", labels)
    wh = Warehouse(settings, max_workers=1)
    try:
        asyncio.run(wh.ping())
        assert sample("memstream_warehouse_connections", labels) == before + 1
        assert sample("memstream_warehouse_connections", {"client": "gateway", "state": "in_use"}) == 0
        assert sample("memstream_warehouse_query_seconds_count", {"statement": "gateway_ping"}) >= 1
    finally:
        wh.close()
    assert sample("memstream_warehouse_connections", labels) == before


def test_redis_pool_gauges(settings: Settings) -> None:
    async def scenario() -> tuple[float, float, float]:
        client = create_redis(settings)
        try:
            await client.ping()
            idle = sample("memstream_redis_pool_connections", {"state": "idle"})
            waiter = asyncio.create_task(client.blpop(["ms-test-never-pushed"], timeout=5))
            in_use = 0.0
            for _ in range(200):  # poll until the blocking call holds its connection
                in_use = sample("memstream_redis_pool_connections", {"state": "in_use"})
                if in_use:
                    break
                await asyncio.sleep(0.01)
            waiter.cancel()
            return idle, in_use, sample("memstream_redis_pool_connections", {"state": "max"})
        finally:
            await client.aclose()

    idle, in_use, most = asyncio.run(scenario())
    assert idle >= 1 and in_use >= 1
    assert most >= settings.redis_max_connections

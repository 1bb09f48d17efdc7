"""`memstream rebuild`: cold-cache recovery — refill the Redis hotset from the warehouse.

Reads MEMORY_RECORDS (every tenant, or one), and writes each live memory whose hotset TTL has not
run out back into Redis through the same versioned script as the ingest agent: memory values,
recency/type/session/agent/handoff indexes, keyword postings and active-by-key pointers. A newer
version already in Redis always wins, so rebuilding a warm hotset changes nothing, and the
command can run while workers are ingesting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import snowflake.connector

from app.models import SUPERSEDING_TYPES, MemoryRecord
from app.pipeline import Intent
from app.redis_client import create_redis
from app.settings import Settings
from app.snowflake_conn import connect_kwargs
from app.text import index_terms
from sinks.hotset import ActiveEntry, Hotset, keys
from sinks.warehouse import SELECT_RECORDS, MemoryRecordsTable, row_to_record

BATCH = 1000


def restore_intent(rec: MemoryRecord, ttl_s: int, now: datetime) -> Intent | None:
    """What a warehouse row restores (pure): nothing for deleted or expired memories."""
    if rec.deleted or rec.content is None:
        return None
    if rec.occurred_at.timestamp() + ttl_s <= now.timestamp():
        return None
    active_field = active_value = None
    if rec.type in SUPERSEDING_TYPES and rec.key and rec.superseded_by is None:
        active_field = keys.active_field(rec.type.value, rec.key)
        active_value = ActiveEntry(rec.version, rec.memory_id).encode()
    text = str(rec.content.get("text", ""))
    return Intent(
        "restore",
        rec,
        {},
        terms=tuple(index_terms(f"{rec.key or ''} {text}")),
        active_field=active_field,
        active_value=active_value,
    )


def warehouse_rows(settings: Settings, tenant: str | None) -> Iterator[dict[str, Any]]:
    conn = snowflake.connector.connect(**connect_kwargs(settings), paramstyle="qmark")
    try:
        cur = conn.cursor()
        where, params = ("WHERE tenant_id = ?", [tenant]) if tenant else ("", [])
        sql = f"SELECT {SELECT_RECORDS} FROM {MemoryRecordsTable.name} {where} ORDER BY tenant_id, version"
        cur.execute(sql, params)
        names = [d.name.lower() for d in cur.description or ()]
        while rows := cur.fetchmany(BATCH):
            for row in rows:
                yield dict(zip(names, row, strict=True))
    finally:
        conn.close()


async def rebuild(settings: Settings, tenant: str | None = None) -> dict[str, int]:
    redis = create_redis(settings)
    hotset = Hotset(redis, settings.hotset_ttl_seconds, settings.state_ttl_seconds)
    now = datetime.now(UTC)
    counts = {"rows": 0, "restored": 0, "skipped": 0}
    batch: list[Intent] = []
    try:
        for row in await asyncio.to_thread(lambda: list(warehouse_rows(settings, tenant))):
            counts["rows"] += 1
            rec = row_to_record(row, settings.topic_events)
            intent = restore_intent(rec, hotset.ttl_for(rec.type, rec.ttl_seconds), now)
            if intent is None:
                counts["skipped"] += 1
                continue
            batch.append(intent)
            if len(batch) >= BATCH:
                counts["restored"] += await hotset.apply(batch)
                batch = []
        counts["restored"] += await hotset.apply(batch)
        counts["api_keys"] = await refill_api_keys(settings, redis, tenant)
    finally:
        await redis.aclose()
    return counts


async def refill_api_keys(settings: Settings, redis: Any, tenant: str | None) -> int:
    """Copy API keys and revocations from AI_MEMORY.API_KEYS into Redis (a cached revocation is
    never undone)."""
    from app.auth.apikeys import ApiKeyStore
    from app.auth.registry import KeyRegistry
    from app.gateway.warehouse import Warehouse

    warehouse = Warehouse(settings, max_workers=1)
    try:
        store = ApiKeyStore(redis, registry=KeyRegistry(warehouse.query, settings.snowflake_schema))
        return await store.refill(tenant)
    finally:
        warehouse.close()


def run_rebuild(settings: Settings, tenant: str | None) -> int:
    started = time.monotonic()
    counts = asyncio.run(rebuild(settings, tenant))
    print(
        f"read {counts['rows']} warehouse rows; restored {counts['restored']} memories into the hotset, "
        f"{counts['rows'] - counts['restored'] - counts['skipped']} already current, "
        f"{counts['skipped']} deleted or past their hotset TTL; {counts['api_keys']} API keys "
        f"({time.monotonic() - started:.1f}s)"
    )
    return 0

"""`memstream reembed --tenant T`: re-embed a tenant's memories with the configured model.

After a model or dimension change, gateways compare only vectors of their own model: until the
tenant is re-embedded, its old vectors are skipped and search answers from keywords and from the
vectors already re-embedded. This reads the tenant's live memories from the hotset (its recency
index and one MGET per chunk), embeds them and replaces their vectors through Lua.VECTORS (same
version guard as the agent: a newer vector written meanwhile is never replaced by this one).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import orjson

from agents.embed import plan, warehouse_rows
from app.embed import load
from app.models import MemoryType
from app.redis_client import create_redis
from app.settings import Settings
from sinks.hotset import Hotset, VectorWriter, keys, layout
from sinks.warehouse import FlushResult, MemoryVectorsTable, WarehouseSink

CHUNK = 1000


async def reembed(settings: Settings, tenant: str) -> dict[str, int]:
    model = load(settings)
    if model is None:
        raise SystemExit("MEMSTREAM_EMBED_MODEL=none: nothing to embed with")
    redis = create_redis(settings)
    hotset = Hotset(redis, settings.hotset_ttl_seconds, settings.state_ttl_seconds)
    writer = VectorWriter(redis)
    sink = WarehouseSink(settings, MemoryVectorsTable(reembed=True)) if settings.embed_warehouse else None
    counts = {"memories": 0, "embedded": 0, "warehouse": 0}

    def ttl(rec: dict[str, Any]) -> int:
        t = rec.get("type")
        return hotset.ttl_for(MemoryType(t) if t else None, rec.get("ttl_seconds"))

    try:
        ids: list[str] = await redis.zrange(keys.recent(tenant), 0, -1)
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            values = await redis.mget([keys.memory(tenant, mid) for mid in chunk])
            records = []
            for value in values:
                try:
                    stored = layout.decode(value)
                except ValueError:
                    continue
                if stored is None or stored.deleted or not stored.record_json:
                    continue
                records.append(orjson.loads(stored.record_json))
            counts["memories"] += len(records)
            ops = [replace(op, replace=True) for op in await asyncio.to_thread(plan, records, model, ttl)]
            counts["embedded"] += await writer.apply(ops)
            if sink is not None and ops:
                sink.extend(warehouse_rows(ops))
                counts["warehouse"] += (await asyncio.to_thread(sink.flush, FlushResult())).rows
    finally:
        await redis.aclose()
        if sink is not None:
            sink.close()
    return counts


def run_reembed(settings: Settings, tenant: str) -> int:
    started = time.monotonic()
    counts = asyncio.run(reembed(settings, tenant))
    print(
        f"re-embedded {counts['embedded']} of {counts['memories']} live memories of {tenant} "
        f"({counts['warehouse']} vectors sent to the warehouse) "
        f"({time.monotonic() - started:.1f}s)"
    )
    return 0

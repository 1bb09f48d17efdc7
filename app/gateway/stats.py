"""Tenant stats and consumer lag (worker on memory.events, warehouse sink on memory.records)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from app.gateway.deps import Services
from app.gateway.reads import HIT, MISS
from app.models import MemoryType
from app.settings import Settings
from sinks.hotset import keys

DEAD_LETTERS = "deadletters"  # the tenant's stats-hash field the worker counts its dead letters in
LAG_TIMEOUT_S = 3.0
LAG_CACHE_S = 5.0
_lag_cache: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}


def consumer_lag(settings: Settings, group: str, topic: str, timeout_s: float = LAG_TIMEOUT_S) -> dict[str, Any]:
    """Committed offsets of `group` against the high watermarks of `topic` (blocking; run in a thread)."""
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": group,
            "enable.auto.commit": False,
            "socket.timeout.ms": int(timeout_s * 1000),
        }
    )
    try:
        md = consumer.list_topics(topic, timeout=timeout_s)
        meta = md.topics.get(topic)
        if meta is None or meta.error is not None:
            return {
                "group": group,
                "topic": topic,
                "total": None,
                "partitions": {},
                "error": "topic not found",
            }
        parts = [TopicPartition(topic, p) for p in sorted(meta.partitions)]
        committed = {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=timeout_s)}
        lag: dict[str, int] = {}
        for tp in parts:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
            done = committed.get(tp.partition, -1)
            lag[str(tp.partition)] = max(0, high - (done if done >= 0 else low))
        return {"group": group, "topic": topic, "total": sum(lag.values()), "partitions": lag}
    finally:
        consumer.close()


async def cached_lag(settings: Settings, group: str, topic: str) -> dict[str, Any]:
    key = (group, topic)
    hit = _lag_cache.get(key)
    if hit is not None and time.monotonic() - hit[0] < LAG_CACHE_S:
        return hit[1]
    try:
        value = await asyncio.wait_for(asyncio.to_thread(consumer_lag, settings, group, topic), LAG_TIMEOUT_S + 1)
    except (KafkaException, TimeoutError, OSError) as exc:
        return {"group": group, "topic": topic, "total": None, "partitions": {}, "error": str(exc)[:200]}
    _lag_cache[key] = (time.monotonic(), value)
    return value


async def tenant_stats(svc: Services, tenant: str) -> dict[str, Any]:
    s = svc.settings
    types = [t.value for t in MemoryType]
    pipe = svc.redis.pipeline(transaction=False)
    pipe.hgetall(keys.stats(tenant))
    pipe.zcard(keys.recent(tenant))
    for t in types:
        pipe.zcard(keys.by_type(tenant, t))
    redis_task = asyncio.ensure_future(pipe.execute())
    worker_lag, sink_lag = await asyncio.gather(
        cached_lag(s, s.worker_group, s.topic_events), cached_lag(s, s.warehouse_group, s.topic_records)
    )
    values = await redis_task
    raw: dict[str, str] = values[0]
    counters = {k: int(v) for k, v in raw.items()}
    for field, n in svc.reader.pending_counts(tenant).items():
        counters[field] = counters.get(field, 0) + n
    hits, misses = counters.get(HIT, 0), counters.get(MISS, 0)
    return {
        "tenant_id": tenant,
        "counts_by_type": {k.removeprefix("type:"): v for k, v in counters.items() if k.startswith("type:")},
        "counters": {k: v for k, v in counters.items() if not k.startswith("type:")},
        "hotset_size": int(values[1]),
        "hotset_by_type": {t: int(n) for t, n in zip(types, values[2 : 2 + len(types)], strict=True) if n},
        "cache": {
            "hits": hits,
            "misses": misses,
            "hit_ratio": round(hits / (hits + misses), 4) if hits + misses else 0.0,
        },
        "consumer_lag": lag_status(worker_lag),
        "dead_letters": counters.get(DEAD_LETTERS, 0),
        "sink_lag": lag_status(sink_lag),
    }


def lag_status(lag: dict[str, Any]) -> dict[str, str]:
    """What a tenant sees of a shared consumer's lag: whether it keeps up, never the figures
    (offsets and lag count every tenant's writes; operators read them on /metrics)."""
    total = lag.get("total")
    if not isinstance(total, int):
        return {"status": "unknown"}
    return {"status": "caught_up" if total == 0 else "behind"}

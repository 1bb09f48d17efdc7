"""The embedding agent: `memory.records` -> a vector per memory in the hotset.

A handler on the worker's batch-consumer loop (agents/loop.py) in its own consumer group
(`embed_group`): it scales with partitions like the other agents and never blocks ingest (keyword
search answers while it lags). `prepare` (consumer thread) parses each record and embeds the
live ones' text in one model call; `write` stores each vector next to its memory (same `{tenant}`
slot, same TTL) through Lua.VECTORS, which keeps only the newest version's vector and drops the
vectors of deleted memories. Its lag (now - newest record's Kafka time) is the gauge
`memstream_embed_lag_seconds` and the global stats field `embed_lag_ms`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson
from redis.exceptions import RedisError

from agents.loop import BatchLoop, Item, LoopConfig, host
from app import metrics
from app.embed import Embedder
from app.settings import Settings
from sinks.hotset import Hotset, VectorOp, VectorWriter, keys, vectors

log = logging.getLogger(__name__)


def embed_text(record: dict[str, Any]) -> str | None:
    """What is embedded of a record (the key and text, as the keyword index reads them), or None
    for one without a live text."""
    content = record.get("content")
    if record.get("deleted_at") is not None or not isinstance(content, dict):
        return None
    text = content.get("text")
    if not isinstance(text, str) or not text.strip():
        return None
    key = record.get("key")
    return f"{key} {text}" if key else text


@dataclass
class EmbedBatch:
    ops: list[VectorOp] = field(default_factory=list)
    newest_ts: float | None = None
    embedded: int = 0


def plan(records: list[dict[str, Any]], model: Embedder, ttl_of: Any) -> list[VectorOp]:
    """Vector writes and drops for parsed records (CPU only: the model runs here)."""
    live: list[tuple[dict[str, Any], str]] = []
    ops: list[VectorOp] = []
    for rec in records:
        text = embed_text(rec)
        if text is None:
            if rec.get("deleted_at") is not None:
                ops.append(VectorOp(rec["tenant_id"], rec["memory_id"], rec["version"], None, 0))
            continue
        live.append((rec, text))
    if live:
        matrix = model.embed([t for _, t in live])
        for (rec, _), row in zip(live, matrix, strict=True):
            occurred = rec.get("occurred_at")
            meta = vectors.VectorMeta(
                model=model.name,
                dim=model.dim,
                type=rec.get("type"),
                session_id=rec.get("session_id"),
                agent_id=rec.get("agent_id"),
                visibility=str(rec.get("visibility") or "private"),
                occurred_ms=_ms(occurred),
            )
            ops.append(
                VectorOp(
                    rec["tenant_id"],
                    rec["memory_id"],
                    rec["version"],
                    vectors.encode(rec["version"], meta, row),
                    ttl_of(rec),
                )
            )
    return ops


def _ms(iso: object) -> int:
    from datetime import datetime

    try:
        return int(datetime.fromisoformat(str(iso)).timestamp() * 1000)
    except ValueError:
        return 0


class EmbedHandler:
    name = "embed"
    dependencies = ("redis",)

    def __init__(self, settings: Settings, model: Embedder, writer: VectorWriter, hotset: Hotset) -> None:
        self.settings = settings
        self.model = model
        self.writer = writer
        self.hotset = hotset

    def _ttl(self, rec: dict[str, Any]) -> int:
        from app.models import MemoryType

        t = rec.get("type")
        return self.hotset.ttl_for(MemoryType(t) if t else None, rec.get("ttl_seconds"))

    def prepare(self, items: list[Item]) -> EmbedBatch:
        batch = EmbedBatch()
        records: list[dict[str, Any]] = []
        for item in items:
            if item.timestamp is not None:
                batch.newest_ts = max(batch.newest_ts or 0.0, item.timestamp)
            if not item.value:
                continue
            try:
                rec = orjson.loads(item.value)
            except orjson.JSONDecodeError:
                log.warning("embed: record at %s/%d/%d is not JSON", item.topic, item.partition, item.offset)
                continue
            if isinstance(rec, dict) and rec.get("tenant_id") and rec.get("memory_id") and rec.get("version"):
                records.append(rec)
        batch.ops = plan(records, self.model, self._ttl)
        batch.embedded = sum(1 for op in batch.ops if op.value is not None)
        return batch

    async def write(self, batch: EmbedBatch) -> None:
        await self.writer.apply(batch.ops)
        metrics.EMBEDDED.inc(batch.embedded)
        if batch.newest_ts is not None:
            lag = max(0.0, time.time() - batch.newest_ts)
            metrics.EMBED_LAG_SECONDS.set(lag)
            await self.writer.redis.hset(keys.GLOBAL_STATS, "embed_lag_ms", str(int(lag * 1000)))  # type: ignore[misc]

    def dependency(self, exc: BaseException) -> str | None:
        return "redis" if isinstance(exc, RedisError | OSError) else None

    def close(self) -> None:
        pass


def register(app: faust.App, settings: Settings, model: Embedder, hotset: Hotset) -> BatchLoop[EmbedBatch]:
    """Run the embedding agent with `app` (started and stopped with the worker)."""
    handler = EmbedHandler(settings, model, VectorWriter(hotset.redis), hotset)
    config = LoopConfig(
        topics=(settings.topic_records,),
        group=settings.embed_group,
        max_messages=settings.embed_batch_max,
        within_s=settings.embed_batch_within_s,
    )
    return host(app, BatchLoop(settings, config, handler))

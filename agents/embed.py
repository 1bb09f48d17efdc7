"""The embedding agent: `memory.records` -> a vector per memory in the hotset.

A handler on the worker's batch-consumer loop (agents/loop.py) in its own consumer group
(`embed_group`): it scales with partitions like the other agents and never blocks ingest (keyword
search answers while it lags). `prepare` (consumer thread) parses each record and embeds the
live ones' text in one model call; `write` stores each vector next to its memory (same `{tenant}`
slot, same TTL) through Lua.VECTORS, which keeps only the newest version's vector and drops the
vectors of deleted memories, then (with `embed_warehouse`) publishes the same vectors, and a
vectorless row for each deleted memory, on `memory.vectors` (acks=all; keyed by tenant/memory id
like `memory.records`). The loop commits the batch's offsets only after both; a publish that
fails is retried in place without rewriting the hotset. The warehouse agent MERGEs
`memory.vectors` into AI_MEMORY.MEMORY_VECTORS (`memstream rebuild` restores vectors from
there) in its own group: a slow or absent warehouse never delays a vector reaching search
(measured: writing the warehouse inside this agent's write took vector freshness at 1,000
events/s from 0.4 s to 4.7 s p99). Its lag
(now - newest record's Kafka time) is the gauge `memstream_embed_lag_seconds` and the global
stats field `embed_lag_ms`.
"""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson
from confluent_kafka import KafkaException
from redis.exceptions import RedisError

from agents.loop import BatchLoop, Item, LoopConfig, host
from app import metrics
from app.embed import Embedder
from app.kafka import AsyncProducer, BrokerUnavailable
from app.settings import Settings
from sinks.hotset import Hotset, VectorOp, VectorWriter, keys, vectors
from sinks.warehouse import MemoryVectorsTable, Row

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
    messages: list[tuple[str, bytes | None, bytes | None]] = field(default_factory=list)  # memory.vectors
    hot_written: bool = False  # a retry after a failed publish does not rewrite the hotset


def warehouse_row(op: VectorOp) -> dict[str, object]:
    """The MEMORY_VECTORS staging dict of a vector write or drop (pure): the vector the hotset
    value holds, as base64 of its little-endian float16 bytes."""
    if op.value is None:
        return MemoryVectorsTable.row(op.tenant, op.memory_id, op.version, None, None, None)
    _, meta, vec = vectors.decode(op.value)
    b64 = base64.b64encode(vec.astype("<f2").tobytes()).decode()
    return MemoryVectorsTable.row(op.tenant, op.memory_id, op.version, meta.model, meta.dim, b64)


def vector_messages(ops: list[VectorOp], topic: str) -> list[tuple[str, bytes | None, bytes | None]]:
    """`memory.vectors` messages for `ops` (pure): key tenant/memory id, value the staging row."""
    return [(topic, f"{op.tenant}/{op.memory_id}".encode(), orjson.dumps(warehouse_row(op))) for op in ops]


def warehouse_rows(ops: list[VectorOp]) -> list[Row]:
    """Staging rows for `ops`, for writing MEMORY_VECTORS directly (`memstream reembed`)."""
    rows: list[Row] = []
    for op in ops:
        line = orjson.dumps(warehouse_row(op))
        rows.append(Row(line, line, "", 0, 0, op.tenant, None))
    return rows


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

    def __init__(
        self,
        settings: Settings,
        model: Embedder,
        writer: VectorWriter,
        hotset: Hotset,
        producer: AsyncProducer | None = None,
    ) -> None:
        self.settings = settings
        self.model = model
        self.writer = writer
        self.hotset = hotset
        self.producer = producer if settings.embed_warehouse else None  # memory.vectors, or None
        self.dependencies: tuple[str, ...] = ("redis", "kafka") if self.producer is not None else ("redis",)

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
        if self.producer is not None:
            batch.messages = vector_messages(batch.ops, self.settings.topic_vectors)
        return batch

    async def write(self, batch: EmbedBatch) -> None:
        if not batch.hot_written:
            await self.writer.apply(batch.ops)
            batch.hot_written = True
            metrics.EMBEDDED.inc(batch.embedded)
        if self.producer is not None and batch.messages:
            await self.producer.send_many(batch.messages)  # acks=all, or raises BrokerUnavailable
        if batch.newest_ts is not None:
            lag = max(0.0, time.time() - batch.newest_ts)
            metrics.EMBED_LAG_SECONDS.set(lag)
            await self.writer.redis.hset(keys.GLOBAL_STATS, "embed_lag_ms", str(int(lag * 1000)))  # type: ignore[misc]

    def dependency(self, exc: BaseException) -> str | None:
        if isinstance(exc, BrokerUnavailable | KafkaException):
            return "kafka"
        return "redis" if isinstance(exc, RedisError | OSError) else None

    def close(self) -> None:
        pass  # the producer belongs to the worker


def register(
    app: faust.App, settings: Settings, model: Embedder, hotset: Hotset, producer: AsyncProducer | None = None
) -> BatchLoop[EmbedBatch]:
    """Run the embedding agent with `app` (started and stopped with the worker)."""
    handler = EmbedHandler(settings, model, VectorWriter(hotset.redis), hotset, producer)
    config = LoopConfig(
        topics=(settings.topic_records,),
        group=settings.embed_group,
        max_messages=settings.embed_batch_max,
        within_s=settings.embed_batch_within_s,
    )
    return host(app, BatchLoop(settings, config, handler))

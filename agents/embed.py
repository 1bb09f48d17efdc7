"""The embedding agent: `memory.records` -> a vector per memory in the hotset.

A handler on the worker's batch-consumer loop (agents/loop.py) in its own consumer group
(`embed_group`): it scales with partitions like the other agents and never blocks ingest (keyword
search answers while it lags). `prepare` (consumer thread) parses each record and embeds the
live ones' text in one model call; `write` stores each vector next to its memory (same `{tenant}`
slot, same TTL) through Lua.VECTORS, which keeps only the newest version's vector and drops the
vectors of deleted memories, then (with `embed_warehouse`) MERGEs the same vectors, and a row
without a vector for each deleted memory, into AI_MEMORY.MEMORY_VECTORS (`memstream rebuild`
restores them from there). The loop commits the batch's offsets only after both writes; a
warehouse write that fails is retried in place without rewriting the hotset (the vectors are
already visible), so a warehouse outage holds back the agent, never keyword search. Its lag
(now - newest record's Kafka time) is the gauge `memstream_embed_lag_seconds` and the global
stats field `embed_lag_ms`.
"""

from __future__ import annotations

import asyncio
import base64
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
from sinks.warehouse import FlushResult, MemoryVectorsTable, Row, WarehouseSink

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
    rows: list[Row] = field(default_factory=list)  # for MEMORY_VECTORS
    hot_written: bool = False  # a retry after a warehouse failure does not rewrite the hotset
    staged: bool = False  # the rows are handed to the sink (a retry flushes what it still holds)


def warehouse_row(op: VectorOp) -> dict[str, object]:
    """The MEMORY_VECTORS staging dict of a vector write or drop (pure): the vector the hotset
    value holds, as base64 of its little-endian float16 bytes."""
    if op.value is None:
        return MemoryVectorsTable.row(op.tenant, op.memory_id, op.version, None, None, None)
    _, meta, vec = vectors.decode(op.value)
    b64 = base64.b64encode(vec.astype("<f2").tobytes()).decode()
    return MemoryVectorsTable.row(op.tenant, op.memory_id, op.version, meta.model, meta.dim, b64)


def warehouse_rows(ops: list[VectorOp], positions: dict[tuple[str, str], Item]) -> list[Row]:
    """Staging rows for `ops`, each with the Kafka position of the record it came from."""
    rows: list[Row] = []
    for op in ops:
        line = orjson.dumps(warehouse_row(op))
        item = positions.get((op.tenant, op.memory_id))
        topic, partition, offset = (item.topic, item.partition, item.offset) if item else ("", 0, 0)
        rows.append(Row(line, line, topic, partition, offset, op.tenant, item.timestamp if item else None))
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
        sink: WarehouseSink | None = None,
    ) -> None:
        self.settings = settings
        self.model = model
        self.writer = writer
        self.hotset = hotset
        self.sink = sink  # MEMORY_VECTORS, or None (embed_warehouse off)
        self.dependencies: tuple[str, ...] = ("redis", "snowflake") if sink is not None else ("redis",)
        self._phase = "redis"  # what the write under way talks to: names a failure's dependency

    def _ttl(self, rec: dict[str, Any]) -> int:
        from app.models import MemoryType

        t = rec.get("type")
        return self.hotset.ttl_for(MemoryType(t) if t else None, rec.get("ttl_seconds"))

    def prepare(self, items: list[Item]) -> EmbedBatch:
        batch = EmbedBatch()
        records: list[dict[str, Any]] = []
        positions: dict[tuple[str, str], Item] = {}
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
                positions[(rec["tenant_id"], rec["memory_id"])] = item
        batch.ops = plan(records, self.model, self._ttl)
        batch.embedded = sum(1 for op in batch.ops if op.value is not None)
        if self.sink is not None:
            batch.rows = warehouse_rows(batch.ops, positions)
        return batch

    async def write(self, batch: EmbedBatch) -> None:
        if not batch.hot_written:
            self._phase = "redis"
            await self.writer.apply(batch.ops)
            batch.hot_written = True
            metrics.EMBEDDED.inc(batch.embedded)
        if self.sink is not None and batch.rows:
            self._phase = "snowflake"
            await asyncio.to_thread(self._sink_write, batch)
        self._phase = "redis"
        if batch.newest_ts is not None:
            lag = max(0.0, time.time() - batch.newest_ts)
            metrics.EMBED_LAG_SECONDS.set(lag)
            await self.writer.redis.hset(keys.GLOBAL_STATS, "embed_lag_ms", str(int(lag * 1000)))  # type: ignore[misc]

    def _sink_write(self, batch: EmbedBatch) -> None:
        sink = self.sink
        assert sink is not None
        if not batch.staged:
            sink.extend(batch.rows)
            batch.staged = True
        sink.flush(FlushResult())
        for x in sink.rejected:
            # A row the warehouse can never take (isolated by the sink): the hotset has the vector.
            log.warning("embed: MEMORY_VECTORS rejected the vector of %s/%s: %s", x.tenant_id, x.position, x.reason)
        sink.rejected.clear()

    def dependency(self, exc: BaseException) -> str | None:
        if self._phase == "snowflake":
            return "snowflake"  # as the warehouse agent: retried until the warehouse takes it
        return "redis" if isinstance(exc, RedisError | OSError) else None

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()


def register(app: faust.App, settings: Settings, model: Embedder, hotset: Hotset) -> BatchLoop[EmbedBatch]:
    """Run the embedding agent with `app` (started and stopped with the worker)."""
    sink = None
    if settings.embed_warehouse:
        # The connector logs every request at INFO: the agent reports what matters itself.
        logging.getLogger("snowflake.connector").setLevel(logging.WARNING)
        logging.getLogger("snowflake.connector.network").setLevel(logging.CRITICAL)
        sink = WarehouseSink(settings, MemoryVectorsTable())
    handler = EmbedHandler(settings, model, VectorWriter(hotset.redis), hotset, sink)
    config = LoopConfig(
        topics=(settings.topic_records,),
        group=settings.embed_group,
        max_messages=settings.embed_batch_max,
        within_s=settings.embed_batch_within_s,
    )
    return host(app, BatchLoop(settings, config, handler))

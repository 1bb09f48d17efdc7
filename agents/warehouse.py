"""The warehouse sink agent: `memory.records` -> MEMORY_RECORDS, `memory.audit` -> AUDIT_LOGS and
`memory.vectors` (the embedding agent's vectors) -> MEMORY_VECTORS.

A handler for the worker's batch-consumer loop (agents/loop.py: consume, retry, commit after the
write, rebalance safety) in its own consumer group (`warehouse_group`), so `memstream worker`
runs the ingest agent and the sink together. Not a Faust stream agent: Faust's per-message path
(~13k msg/s on its own here) takes the core the warehouse needs; librdkafka hands over a batch
for a few microseconds a message.

Per batch (`consume(sink_batch_max_rows, sink_batch_within_s)`; the sink chunks by bytes):
`prepare` parses and validates (consumer thread, while earlier batches are written); `write`
stages the batch (PUT + COPY into a session's stage table, in a thread: the connector blocks);
the `finish` it returns MERGEs it, then publishes what can never be written to
`memory.deadletter` (acks=all). The loop runs that `finish` while the next batch is staged: each
table has two sinks (two sessions, each with its own stage table), which batches use in turn.
Any other failure (warehouse or broker unreachable, a missing table) retries the same step in
place with backoff and jitter, reconnecting each time (a MERGE after a reconnection stages its
rows again). Every write is idempotent, so a crash at any point replays safely.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import faust
import orjson
from confluent_kafka import KafkaException

from agents.loop import BatchLoop, Finish, Item, LoopConfig, host
from app import metrics
from app.kafka import BrokerUnavailable, publish_sync
from app.models import DeadLetter
from app.pipeline import Incoming, dead_letter
from app.settings import Settings
from sinks.warehouse import (
    AuditLogsTable,
    FlushResult,
    MemoryRecordsTable,
    MemoryVectorsTable,
    Rejected,
    Row,
    TableSpec,
    Tombstone,
    WarehouseSink,
    classify,
    parse,
)

log = logging.getLogger(__name__)

RETRY_INITIAL_S = 0.2
RETRY_MAX_S = 5.0


@dataclass
class Route:
    """A topic's table: two sinks, used by batches in turn (one MERGEs while the next stages)."""

    lanes: tuple[WarehouseSink, WarehouseSink]
    prefix: str  # SINK_ROWS result label prefix: "" for records, "audit_" for audit entries

    @property
    def table(self) -> TableSpec:
        return self.lanes[0].table


def route(settings: Settings, table: TableSpec, prefix: str) -> Route:
    return Route((WarehouseSink(settings, table), WarehouseSink(settings, table)), prefix)


@dataclass
class Batch:
    """One consumed batch, parsed: rows (or rejects) per topic."""

    items: dict[str, list[Row | Rejected]] = field(default_factory=dict)
    messages: int = 0
    lane: int | None = None  # which of the routes' sinks it was handed to (a retry uses the same)
    results: dict[str, FlushResult] = field(default_factory=dict)
    merges: dict[str, Callable[[], FlushResult]] = field(default_factory=dict)  # per topic, once staged
    started: float = 0.0


class WarehouseHandler:
    """The warehouse Handler: parse in `prepare`; stage + MERGE + dead letters in `write`."""

    name = "warehouse"
    dependencies = ("snowflake",)

    def __init__(self, settings: Settings, routes: dict[str, Route] | None = None) -> None:
        self.settings = settings
        self.routes = routes or {
            settings.topic_records: route(settings, MemoryRecordsTable(), ""),
            settings.topic_audit: route(settings, AuditLogsTable(), "audit_"),
            settings.topic_vectors: route(settings, MemoryVectorsTable(), "vector_"),
        }
        # Parsing a batch and staging one are both Python-bound: they take turns (the parse then
        # overlaps the MERGE, which waits on the warehouse).
        self._turn = threading.Lock()
        for r in self.routes.values():
            for sink in r.lanes:
                sink.turn = self._turn
        # The loop finishes batch n (its MERGE) before it writes batch n + 2: batches taking the
        # two sinks in turn never meet on one.
        self._lane = 0

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(self.routes)

    def prepare(self, items: list[Item]) -> Batch:
        batch = Batch(messages=len(items))
        with self._turn:
            for item in items:
                r = self.routes.get(item.topic)
                if r is None:
                    continue
                row = parse(r.table, item.value, item.topic, item.partition, item.offset, item.timestamp)
                if isinstance(row, Tombstone):
                    # A null value forgets a key; the delete record before it did the MERGE.
                    metrics.SINK_ROWS.labels(f"{r.prefix}tombstone").inc()
                    continue
                batch.items.setdefault(item.topic, []).append(row)
        return batch

    async def write(self, batch: Batch) -> Finish | None:
        if not batch.items:
            return None
        await asyncio.to_thread(self.stage_sync, batch)

        async def finish() -> None:
            await asyncio.to_thread(self.merge_sync, batch)

        return finish

    def stage_sync(self, batch: Batch) -> None:
        """Hand the batch to the next sinks and stage it; raises to be retried (what was staged
        stays staged)."""
        if batch.lane is None:
            batch.lane, self._lane = self._lane, 1 - self._lane
            batch.started = time.perf_counter()
            for topic, items in batch.items.items():
                self.routes[topic].lanes[batch.lane].extend(items)
            batch.results = {topic: FlushResult() for topic in batch.items}
        with _logged_if_systemic():
            for topic in batch.items:
                if topic not in batch.merges:
                    sink = self.routes[topic].lanes[batch.lane]
                    batch.merges[topic] = sink.flush_later(batch.results[topic])

    def merge_sync(self, batch: Batch) -> FlushResult:
        """MERGE a staged batch, then dead-letter its rejects; raises to be retried (what was
        merged stays merged, the rest stays pending in the sinks)."""
        assert batch.lane is not None, "stage_sync first"
        touched = {topic: self.routes[topic] for topic in batch.items}
        with _logged_if_systemic():
            for merge in batch.merges.values():
                merge()
            self._dead_letter(touched, batch.lane)
        total = FlushResult()
        for topic, result in batch.results.items():
            self._observe(touched[topic].prefix, result)
            total.counts.add(result.counts)
            total.rows += result.rows
            total.chunks += result.chunks
        elapsed = time.perf_counter() - batch.started
        metrics.SINK_BATCH_SECONDS.observe(elapsed)
        log.debug(
            "warehouse batch: %d messages, %d rows in %d chunks, %.3fs",
            batch.messages,
            total.rows,
            total.chunks,
            elapsed,
        )
        return total

    def dependency(self, exc: BaseException) -> str | None:
        # Everything is retried: a data error is isolated by the sink, so what reaches here is the
        # warehouse, the broker or the schema (fixed by `memstream migrate`).
        return "kafka" if isinstance(exc, BrokerUnavailable | KafkaException) else "snowflake"

    def close(self) -> None:
        for r in self.routes.values():
            for sink in r.lanes:
                sink.close()

    def _dead_letter(self, touched: dict[str, Route], lane: int) -> None:
        rejected: list[tuple[Route, Rejected]] = [(r, x) for r in touched.values() for x in r.lanes[lane].rejected]
        if not rejected:
            return
        messages = [
            ((x.tenant_id or "").encode() or None, orjson.dumps(_dead(x).model_dump(mode="json"))) for _, x in rejected
        ]
        publish_sync(self.settings, messages, self.settings.topic_deadletter)  # acks=all or raises
        for r in touched.values():
            r.lanes[lane].rejected.clear()
        for r, x in rejected:
            metrics.SINK_ROWS.labels(f"{r.prefix}deadletter").inc()
            log.warning("dead letter from %s (%s): %s", x.position, x.stage, x.reason)

    @staticmethod
    def _observe(prefix: str, result: FlushResult) -> None:
        c = result.counts
        for name, n in (
            ("inserted", c.inserted),
            ("updated", c.updated),
            ("unchanged", c.unchanged),
            ("superseded", c.superseded),
        ):
            if n:
                metrics.SINK_ROWS.labels(prefix + name).inc(n)
        if result.newest_timestamp is not None and not prefix:
            metrics.SINK_LAG_SECONDS.set(max(0.0, time.time() - result.newest_timestamp))


@contextlib.contextmanager
def _logged_if_systemic() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        if not isinstance(exc, BrokerUnavailable | KafkaException) and classify(exc) == "systemic":
            # e.g. a missing table: someone has to run `memstream migrate`
            log.error("warehouse sink: systemic error (retried until fixed): %s", _first_line(exc))
        raise


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else repr(exc)


def _dead(r: Rejected) -> DeadLetter:
    msg = Incoming(r.raw, r.position.topic, r.position.partition, r.position.offset)
    return dead_letter(msg, r.reason, r.stage, r.tenant_id)


def register(app: faust.App, settings: Settings) -> BatchLoop[Batch]:
    """Run the warehouse agent with `app` (started and stopped with the worker)."""
    # The connector logs every request at INFO and every retried one with a traceback; the
    # agent reports what matters itself.
    logging.getLogger("snowflake.connector").setLevel(logging.WARNING)
    logging.getLogger("snowflake.connector.network").setLevel(logging.CRITICAL)
    logging.getLogger("snowflake.connector.vendored").setLevel(logging.ERROR)
    handler = WarehouseHandler(settings)
    config = LoopConfig(
        topics=handler.topics,
        group=settings.warehouse_group,
        max_messages=settings.sink_batch_max_rows,
        within_s=settings.sink_batch_within_s,
        retry_initial_s=RETRY_INITIAL_S,
        retry_max_s=RETRY_MAX_S,
        stop_timeout_s=settings.snowflake_network_timeout_s * 3 + 5,
    )
    return host(app, BatchLoop(settings, config, handler))

"""The warehouse agents: `memory.records` -> MEMORY_RECORDS and `memory.audit` -> AUDIT_LOGS.

Per batch (count and time from `noack_take`, bytes by the sink's chunking): parse and stage, MERGE,
publish what can never be written to `memory.deadletter`, and only then ack the Kafka offsets.
Any other failure (the warehouse or broker unreachable, a missing table) retries in place with
exponential backoff and jitter, reconnecting each time, without dropping or acking the batch:
Faust would not redeliver it while the worker runs, and an exception in an agent acks.
The connector is blocking, so each sink runs in its own thread and the event loop (and the
ingest agent on it) keeps going while the warehouse is slow or down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust
import orjson
from faust.types import EventT
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from app import metrics
from app.kafka import AsyncProducer, BrokerUnavailable
from app.models import DeadLetter
from app.pipeline import Incoming, dead_letter
from app.settings import Settings
from sinks.warehouse import AuditLogsTable, FlushResult, MemoryRecordsTable, Rejected, WarehouseSink, classify

log = logging.getLogger(__name__)

RETRY_INITIAL_S = 0.2
RETRY_MAX_S = 5.0

# One Kafka message as the agent hands it over: value, topic, partition, offset, timestamp (s).
Message = tuple[bytes | None, str, int, int, float | None]


class SinkProcessor:
    def __init__(self, settings: Settings, sink: WarehouseSink, producer: AsyncProducer, label: str) -> None:
        self.settings = settings
        self.sink = sink
        self.producer = producer
        self.label = label  # "records" or "audit": prefixes the SINK_ROWS result label for audit
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"warehouse-{label}")
        self._failures = 0

    def _add_all(self, batch: list[Message]) -> None:
        for value, topic, partition, offset, ts in batch:
            self.sink.add(value, topic, partition, offset, ts)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def process(self, batch: list[Message]) -> FlushResult:
        """Write the batch; returns only when every message is merged or dead-lettered."""
        started = time.perf_counter()
        await self._run(self._add_all, batch)
        result = FlushResult()
        async for attempt in AsyncRetrying(
            wait=wait_exponential_jitter(initial=RETRY_INITIAL_S, max=RETRY_MAX_S),
            retry=retry_if_exception_type(Exception),
            before_sleep=self._on_retry,
            reraise=True,
        ):
            with attempt:
                await self._run(self.sink.flush, result)
                await self._dead_letter()
        if self._failures:
            log.info("warehouse %s sink recovered after %d failed attempts", self.label, self._failures)
            self._failures = 0
        metrics.DEPENDENCY_UP.labels("snowflake").set(1)
        elapsed = time.perf_counter() - started
        log.debug(
            "warehouse %s batch: %d rows in %d chunks, %.3fs", self.label, result.rows, result.chunks, elapsed
        )
        self._observe(result, elapsed)
        return result

    async def _dead_letter(self) -> None:
        rejected = list(self.sink.rejected)
        if not rejected:
            return
        s = self.settings
        messages = [
            (
                s.topic_deadletter,
                (r.tenant_id or "").encode() or None,
                orjson.dumps(_dead(r).model_dump(mode="json")),
            )
            for r in rejected
        ]
        await self.producer.send_many(messages)
        del self.sink.rejected[: len(rejected)]
        prefix = "" if self.label == "records" else f"{self.label}_"
        metrics.SINK_ROWS.labels(f"{prefix}deadletter").inc(len(rejected))
        for r in rejected:
            log.warning("dead letter from %s (%s): %s", r.position, r.stage, r.reason)

    def _on_retry(self, state: Any) -> None:
        exc = state.outcome.exception() if state.outcome else None
        self._failures += 1
        dep = "kafka" if isinstance(exc, BrokerUnavailable) else "snowflake"
        kind = "broker" if dep == "kafka" else classify(exc) if exc is not None else "unknown"
        metrics.DEPENDENCY_UP.labels(dep).set(0)
        metrics.DEPENDENCY_RETRIES.labels(dep).inc()
        wait = state.next_action.sleep if state.next_action else 0.0
        msg = "warehouse %s sink: %s error (attempt %d), retrying in %.1fs: %s"
        args = (self.label, kind, state.attempt_number, wait, str(exc).splitlines()[0] if exc else "")
        if kind == "systemic":
            log.error(msg, *args)  # e.g. a missing table: someone has to run `memstream migrate`
        else:
            log.warning(msg, *args)

    def _observe(self, result: FlushResult, seconds: float) -> None:
        prefix = "" if self.label == "records" else f"{self.label}_"
        c = result.counts
        for name, n in (
            ("inserted", c.inserted),
            ("updated", c.updated),
            ("unchanged", c.unchanged),
            ("superseded", c.superseded),
        ):
            if n:
                metrics.SINK_ROWS.labels(prefix + name).inc(n)
        if result.rows:
            metrics.SINK_BATCH_SECONDS.observe(seconds)
        if result.newest_timestamp is not None:
            metrics.SINK_LAG_SECONDS.set(max(0.0, time.time() - result.newest_timestamp))

    def close(self) -> None:
        """Best effort: a connector call in flight finishes on its own (bounded by the network timeout)."""
        self._executor.submit(self.sink.close)
        self._executor.shutdown(wait=False, cancel_futures=False)


def _dead(r: Rejected) -> DeadLetter:
    msg = Incoming(r.raw, r.position.topic, r.position.partition, r.position.offset)
    return dead_letter(msg, r.reason, r.stage, r.tenant_id)


def register(
    app: faust.App, processor: SinkProcessor, topic_name: str, name: str, settings: Settings
) -> faust.types.AgentT:
    topic = app.topic(
        topic_name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )

    async def sink(stream: faust.StreamT[bytes]) -> None:
        # noack_take: `take()` would ack the batch even if the write failed. A separate writer task
        # writes and acks the batches strictly in order while this loop takes the next one, so
        # Faust's per-message work overlaps the MERGE; the queue bounds the batches in memory.
        queue: asyncio.Queue[list[EventT] | None] = asyncio.Queue(maxsize=1)

        async def writer() -> None:
            while (events := await queue.get()) is not None:
                batch: list[Message] = [
                    (
                        e.message.value,
                        e.message.topic,
                        e.message.partition,
                        e.message.offset,
                        e.message.timestamp,
                    )
                    for e in events
                ]
                await processor.process(batch)
                for event in events:
                    await stream.ack(event)

        task = asyncio.ensure_future(writer())
        try:
            async for events in stream.noack_take(
                settings.sink_batch_max_rows, within=settings.sink_batch_within_s
            ):
                await queue.put(events)
                if task.done():
                    task.result()  # the writer never fails on its own; surface it if it did
            await queue.put(None)
            await task
        finally:
            task.cancel()

    # concurrency 1: one writer per partition's ids (the emulator's MERGE is not atomic, and
    # Faust can commit past unprocessed messages with concurrency > 1).
    return app.agent(topic, name=name, concurrency=1)(sink)


def register_all(app: faust.App, settings: Settings, producer: AsyncProducer) -> list[SinkProcessor]:
    """Both warehouse agents on `app`; returns their processors (close them on shutdown)."""
    # The connector logs every request at INFO and every retried one with a traceback; the sink
    # reports what matters itself.
    logging.getLogger("snowflake.connector").setLevel(logging.WARNING)
    logging.getLogger("snowflake.connector.network").setLevel(logging.CRITICAL)
    records = SinkProcessor(settings, WarehouseSink(settings, MemoryRecordsTable()), producer, "records")
    audit = SinkProcessor(settings, WarehouseSink(settings, AuditLogsTable()), producer, "audit")
    register(app, records, settings.topic_records, "memstream.warehouse", settings)
    register(app, audit, settings.topic_audit, "memstream.audit", settings)
    return [records, audit]

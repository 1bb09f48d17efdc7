"""The warehouse sink agent: `memory.records` -> MEMORY_RECORDS and `memory.audit` -> AUDIT_LOGS.

One plain confluent-kafka consumer in its own thread and its own consumer group
(`warehouse_group`), run as a service of the worker's Faust app, so `memstream worker` runs the
ingest agent and the sink together. Not a Faust agent: Faust's per-message path (~13k msg/s on
its own here) takes the core the warehouse needs, and measured 0.25-0.35x of the raw stage +
MERGE path; librdkafka hands over a batch for a few microseconds a message.

Per batch (`consume(max_rows, within)`: count and time; the sink chunks by bytes): parse, then
(in a writer thread, while the next batch is consumed) stage and MERGE, publish what can never be
written to `memory.deadletter` (acks=all), and only then commit the batch's offsets. Any other
failure (warehouse or broker unreachable, a missing table) retries the same batch in place with
exponential backoff and jitter, reconnecting each time. Nothing is committed before it is merged
and every write is idempotent, so a crash at any point replays safely. A rebalance (it happens
inside `consume`) waits until the batches already taken are merged and committed, so two members
never MERGE the same ids at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import faust
import orjson
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential_jitter

from app import metrics
from app.kafka import BrokerUnavailable, batch_consumer_config, publish_sync
from app.models import DeadLetter
from app.pipeline import Incoming, dead_letter
from app.settings import Settings
from sinks.warehouse import (
    AuditLogsTable,
    FlushResult,
    MemoryRecordsTable,
    Rejected,
    Row,
    WarehouseSink,
    classify,
    parse,
)

log = logging.getLogger(__name__)

RETRY_INITIAL_S = 0.2
RETRY_MAX_S = 5.0


class Stopping(Exception):
    """The worker is shutting down while a batch was being retried: leave it uncommitted."""


@dataclass
class Route:
    sink: WarehouseSink
    prefix: str  # SINK_ROWS result label prefix: "" for records, "audit_" for audit entries


@dataclass
class Batch:
    """What one `consume` returned, parsed: staged rows per topic and the offsets to commit."""

    items: dict[str, list[Row | Rejected]] = field(default_factory=dict)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    messages: int = 0


class WarehouseAgent:
    """consume -> parse (this thread) | stage + MERGE -> dead letters -> commit (writer thread).

    The writer works on one batch while the next is consumed and parsed; batches are written
    and committed strictly in order. `run` blocks; `start` runs it in a thread.
    """

    def __init__(self, settings: Settings, routes: dict[str, Route] | None = None) -> None:
        self.settings = settings
        self.routes = routes or {
            settings.topic_records: Route(WarehouseSink(settings, MemoryRecordsTable()), ""),
            settings.topic_audit: Route(WarehouseSink(settings, AuditLogsTable()), "audit_"),
        }
        # Parsing a batch and staging one are both Python-bound: they take turns (the parse then
        # overlaps the MERGE, which waits on the warehouse).
        self._turn = threading.Lock()
        for route in self.routes.values():
            route.sink.turn = self._turn
        self._stopping = threading.Event()
        self._queue: queue.Queue[Batch | None] = queue.Queue(maxsize=1)
        self._writer_error: BaseException | None = None
        # Offsets the writer merged, for the consumer thread to commit: a synchronous commit from
        # the writer thread would wait for the consumer thread, which sits in consume().
        self._merged: queue.SimpleQueue[dict[tuple[str, int], int]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._writer: threading.Thread | None = None
        self._failures = 0
        self.batches = 0  # merged

    # lifecycle ---------------------------------------------------------------------------------

    def start(self, on_exit: Callable[[BaseException | None], None] | None = None) -> None:
        def main() -> None:
            error: BaseException | None = None
            try:
                self.run()
            except BaseException as exc:
                error = exc
                log.exception("warehouse agent stopped unexpectedly")
            finally:
                if on_exit is not None:
                    on_exit(error)

        self._thread = threading.Thread(target=main, name="warehouse-consumer", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    # consumer thread ---------------------------------------------------------------------------

    def run(self) -> None:
        s = self.settings
        consumer = Consumer(batch_consumer_config(s, s.warehouse_group))
        writer = threading.Thread(target=self._write_loop, name="warehouse-writer", daemon=True)
        self._writer = writer
        writer.start()
        consumer.subscribe(list(self.routes), on_revoke=self._on_revoke)
        log.info("warehouse agent consuming %s as group %s", ", ".join(self.routes), s.warehouse_group)
        try:
            while not self._stopping.is_set():
                msgs = consumer.consume(num_messages=s.sink_batch_max_rows, timeout=s.sink_batch_within_s)
                if msgs:
                    with self._turn:
                        batch = self._prepare(msgs)
                    self._handoff(consumer, batch)
                self._commit_merged(consumer)
                if self._writer_error is not None:
                    raise self._writer_error
        finally:
            self._stopping.set()
            self._put(None)
            writer.join(s.snowflake_network_timeout_s * 3 + 5)
            try:
                self._commit_merged(consumer)
                consumer.close()  # leave the group now rather than after the session timeout
            finally:
                for route in self.routes.values():
                    route.sink.close()

    def _prepare(self, msgs: list[Message]) -> Batch:
        batch = Batch(messages=len(msgs))
        for m in msgs:
            if m.error() is not None:
                # Partition EOF is off; anything else is informational (librdkafka retries itself).
                log.warning("consumer error: %s", m.error())
                continue
            topic, partition, offset = m.topic() or "", m.partition() or 0, m.offset() or 0
            route = self.routes.get(topic)
            if route is None:
                continue
            ts_type, ts_ms = m.timestamp()
            stamp = ts_ms / 1000 if ts_type and ts_ms > 0 else None
            item = parse(route.sink.table, m.value(), topic, partition, offset, stamp)
            batch.items.setdefault(topic, []).append(item)
            key = (topic, partition)
            batch.offsets[key] = max(batch.offsets.get(key, -1), offset)
        return batch

    def _handoff(self, consumer: Consumer, batch: Batch) -> None:
        # Blocks while the writer is busy with one batch and another is waiting: two batches
        # in memory at most.
        while not self._stopping.is_set():
            try:
                self._queue.put(batch, timeout=0.5)
                return
            except queue.Full:
                self._commit_merged(consumer)
                if self._writer_error is not None:
                    raise self._writer_error from None

    def _put(self, item: Batch | None) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put(item, timeout=1.0)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Hand the partitions over only once every batch taken from them is merged and committed
        # (or abandoned on shutdown): the new owner must not MERGE the same ids concurrently.
        done = self._queue.all_tasks_done
        with done:
            while self._queue.unfinished_tasks:
                if self._writer is None or not self._writer.is_alive():
                    break  # nothing will finish them: they stay uncommitted
                done.wait(0.2)
        self._commit_merged(consumer)

    # writer thread -----------------------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            batch = self._queue.get()
            try:
                if batch is None:
                    return
                if self._stopping.is_set():
                    continue  # shutting down: leave it uncommitted, it is redelivered
                self.process(batch)
            except Stopping:
                log.info("warehouse agent stopping with a batch unwritten; it is redelivered on restart")
            except BaseException as exc:
                self._writer_error = exc
                self._stopping.set()
                log.exception("warehouse writer failed")
                return
            finally:
                self._queue.task_done()

    def process(self, batch: Batch) -> FlushResult:
        """Write one batch, retrying until it is written or the agent stops; then hand its offsets
        to the consumer thread to commit."""
        started = time.perf_counter()
        touched = {topic: self.routes[topic] for topic in batch.items}
        for topic, items in batch.items.items():
            touched[topic].sink.extend(items)
        results = {topic: FlushResult() for topic in touched}
        for attempt in Retrying(
            wait=wait_exponential_jitter(initial=RETRY_INITIAL_S, max=RETRY_MAX_S),
            retry=retry_if_exception_type(Exception),
            sleep=self._sleep,
            before_sleep=self._on_retry,
            reraise=True,
        ):
            with attempt:
                for topic, route in touched.items():
                    route.sink.flush(results[topic])
                self._dead_letter(touched)
        self._merged.put(batch.offsets)
        if self._failures:
            log.info("warehouse sink recovered after %d failed attempts", self._failures)
            self._failures = 0
        metrics.DEPENDENCY_UP.labels("snowflake").set(1)
        self.batches += 1
        total = FlushResult()
        for topic, result in results.items():
            self._observe(touched[topic].prefix, result)
            total.counts.add(result.counts)
            total.rows += result.rows
            total.chunks += result.chunks
        elapsed = time.perf_counter() - started
        metrics.SINK_BATCH_SECONDS.observe(elapsed)
        log.debug(
            "warehouse batch: %d messages, %d rows in %d chunks, %.3fs",
            batch.messages,
            total.rows,
            total.chunks,
            elapsed,
        )
        return total

    def _sleep(self, seconds: float) -> None:
        if self._stopping.wait(seconds):
            for route in self.routes.values():
                route.sink.pending.clear()
                route.sink.rejected.clear()
            raise Stopping

    def _dead_letter(self, touched: dict[str, Route]) -> None:
        rejected: list[tuple[Route, Rejected]] = [(r, x) for r in touched.values() for x in r.sink.rejected]
        if not rejected:
            return
        messages = [
            ((x.tenant_id or "").encode() or None, orjson.dumps(_dead(x).model_dump(mode="json"))) for _, x in rejected
        ]
        publish_sync(self.settings, messages, self.settings.topic_deadletter)  # acks=all or raises
        for route in touched.values():
            route.sink.rejected.clear()
        for route, x in rejected:
            metrics.SINK_ROWS.labels(f"{route.prefix}deadletter").inc()
            log.warning("dead letter from %s (%s): %s", x.position, x.stage, x.reason)

    def _commit_merged(self, consumer: Consumer) -> None:
        offsets: dict[tuple[str, int], int] = {}
        while True:
            try:
                done = self._merged.get_nowait()
            except queue.Empty:
                break
            for key, offset in done.items():
                offsets[key] = max(offsets.get(key, -1), offset)
        if not offsets:
            return
        tps = [TopicPartition(t, p, o + 1) for (t, p), o in sorted(offsets.items())]
        try:
            consumer.commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:
            # Typically a rebalance took the partitions while the batch was being retried. The
            # batch is merged; whoever owns the partitions now replays it to no change.
            log.warning("offset commit failed (the batch is merged and will be replayed): %s", exc)

    def _on_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        self._failures += 1
        dep = "kafka" if isinstance(exc, BrokerUnavailable | KafkaException) else "snowflake"
        kind = "broker" if dep == "kafka" else classify(exc) if exc is not None else "unknown"
        metrics.DEPENDENCY_UP.labels(dep).set(0)
        metrics.DEPENDENCY_RETRIES.labels(dep).inc()
        wait = state.next_action.sleep if state.next_action else 0.0
        first_line = str(exc).strip().splitlines()[0] if exc is not None and str(exc).strip() else repr(exc)
        args = (kind, state.attempt_number, wait, first_line)
        if kind == "systemic":
            # e.g. a missing table: someone has to run `memstream migrate`
            log.error("warehouse sink: %s error (attempt %d), retrying in %.1fs: %s", *args)
        else:
            log.warning("warehouse sink: %s error (attempt %d), retrying in %.1fs: %s", *args)

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


def _dead(r: Rejected) -> DeadLetter:
    msg = Incoming(r.raw, r.position.topic, r.position.partition, r.position.offset)
    return dead_letter(msg, r.reason, r.stage, r.tenant_id)


def register(app: faust.App, settings: Settings) -> WarehouseAgent:
    """Run the warehouse agent with `app` (started and stopped with the worker)."""
    # The connector logs every request at INFO and every retried one with a traceback; the
    # agent reports what matters itself.
    logging.getLogger("snowflake.connector").setLevel(logging.WARNING)
    logging.getLogger("snowflake.connector.network").setLevel(logging.CRITICAL)
    logging.getLogger("snowflake.connector.vendored").setLevel(logging.ERROR)
    agent = WarehouseAgent(settings)

    @app.service
    class WarehouseService(faust.Service):
        """Owns the agent's thread; if the thread dies, the worker crashes (and is restarted)
        rather than keep ingesting with nothing reaching the system of record."""

        async def on_start(self) -> None:
            loop = asyncio.get_running_loop()
            self._exited: asyncio.Future[BaseException | None] = loop.create_future()

            def on_exit(error: BaseException | None) -> None:
                loop.call_soon_threadsafe(_settle, self._exited, error)

            agent.start(on_exit)

        @faust.Service.task
        async def _watch(self) -> None:
            error = await self._exited
            if not self.should_stop:
                await self.crash(error or RuntimeError("the warehouse agent exited"))

        async def on_stop(self) -> None:
            await asyncio.to_thread(agent.stop, settings.snowflake_network_timeout_s * 3 + 5)

    return agent


def _settle(fut: asyncio.Future[BaseException | None], error: BaseException | None) -> None:
    if not fut.done():
        fut.set_result(error)

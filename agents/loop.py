"""One batch-consumer loop for every worker agent: consume -> prepare -> write -> commit.

The loop owns everything about Kafka and failure; an agent owns only what it does with a batch.

What the loop does, per consumer group:
- subscribes a plain confluent-kafka consumer (manual commits; `app.kafka.batch_consumer_config`)
  and polls batches with `consume(max_messages, within_s)` in its own consumer thread (librdkafka
  waits without the GIL). Faust's per-message path costs more than the agents' work, so the
  agents are not Faust stream agents: the Faust app only hosts this loop as a service;
- decodes each message into an `Item` (value, topic, partition, offset, timestamp); errors the
  consumer reports are logged and skipped;
- calls `handler.prepare(items)` in the consumer thread, so the next batch is prepared while the
  current one is written (three batches in memory at most: one finishing, one being written, one
  being prepared);
- calls `await handler.write(batch)` on the event loop, one batch at a time, strictly in order.
  A write that raises is retried in place (exponential backoff with jitter) until it succeeds or
  the worker stops: a batch is never skipped, and nothing past an unwritten batch is committed.
  A write may return `finish`, the rest of its work: the loop runs it (retried the same way) while
  the next batch's `write` runs, and always before that batch's own `finish`; a batch counts as
  written once its `finish` returns. So one batch's last wait overlaps the next one's first.
  `handler.dependency(exc)` names the dependency an exception means ("redis", "kafka",
  "snowflake"...: the `memstream_dependency_up` / `_retries_total` label), or None for a bug,
  which stops the loop and crashes the worker (it is restarted) instead of retrying forever;
- commits a batch's offsets only after its write (and its finish) returned (from the consumer
  thread, before the next `consume`); a stop during retries leaves the batch uncommitted, so it
  is redelivered;
- on a rebalance, hands revoked partitions over only after every batch already taken is written
  and committed, so two members never write the same records at once;
- runs as a service of the worker's Faust app (`host`): started and stopped with the worker, and
  if the loop dies the worker crashes rather than sit idle holding its partitions.

Writes must be idempotent: a crash between a write and its commit replays the batch.

A new agent (e.g. one that follows `memory.records` and writes vectors) is a Handler plus a
`register` function, about a page:

    class EmbeddingHandler:
        name = "embedding"

        def __init__(self, settings: Settings, vectors: VectorStore) -> None:
            self.settings, self.vectors = settings, vectors

        def prepare(self, items: list[Item]) -> list[Vector]:     # consumer thread: pure, CPU
            return [embed(parse(i.value)) for i in items if i.value]

        async def write(self, batch: list[Vector]) -> None:       # event loop; retried in place
            await self.vectors.upsert(batch)                      # idempotent
            # blocking client: await asyncio.to_thread(self.vectors.upsert_sync, batch)

        def dependency(self, exc: BaseException) -> str | None:
            return "redis" if isinstance(exc, RedisError | OSError) else None

        def close(self) -> None:
            pass

    def register(app: faust.App, settings: Settings, vectors: VectorStore) -> BatchLoop[list[Vector]]:
        config = LoopConfig(
            topics=(settings.topic_records,),
            group=settings.embedding_group,
            max_messages=500,
            within_s=0.5,
        )
        return host(app, BatchLoop(settings, config, EmbeddingHandler(settings, vectors)))

then add it to `app/worker.py` (AGENTS and `create_app_with_agents`). Give it its own consumer
group: each group gets every record once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, Protocol, TypeVar

import faust
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential, wait_random

from app import metrics
from app.kafka import batch_consumer_config
from app.settings import Settings

log = logging.getLogger(__name__)

B = TypeVar("B")
T = TypeVar("T")
Finish = Callable[[], Awaitable[None]]  # the rest of a batch's write, run after `write` returns
Offsets = dict[tuple[str, int], int]  # (topic, partition) -> next offset to read


@dataclass(frozen=True, slots=True)
class Item:
    """One Kafka message as a handler receives it."""

    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp: float | None  # seconds since the epoch (the broker's or producer's), if known


class Handler(Protocol[B]):
    """What an agent does with a batch; the loop does the rest."""

    @property
    def name(self) -> str:
        """For logs and thread names."""
        ...

    @property
    def dependencies(self) -> tuple[str, ...]:
        """What `write` talks to: marked up after each written batch."""
        ...

    def prepare(self, items: list[Item]) -> B:
        """Turn a batch of messages into what `write` takes (consumer thread; no I/O)."""
        ...

    async def write(self, batch: B) -> Finish | None:
        """Write the batch (idempotently); raise to have it retried in place. May return `finish`,
        the rest of the write (idempotent too), run while the next batch's `write` runs."""
        ...

    def dependency(self, exc: BaseException) -> str | None:
        """The dependency a failed write means (retried), or None (a bug: the worker stops)."""
        ...

    def close(self) -> None:
        """Release the handler's own clients after the loop stops."""
        ...


@dataclass(frozen=True)
class LoopConfig:
    topics: tuple[str, ...]
    group: str
    max_messages: int  # per consume()
    within_s: float  # consume() returns after this long with whatever arrived
    # How long the broker may hold an empty fetch: bounds publish -> visible latency on brokers
    # that hold a fetch for the whole wait even when data arrives (Tansu).
    fetch_wait_ms: int = 100
    retry_initial_s: float = 0.1
    retry_max_s: float = 10.0
    # A graceful stop waits this long for the write under way (then the worker cancels it).
    stop_timeout_s: float = 30.0


class Stopping(Exception):
    """The worker stops while a batch is being retried: it stays uncommitted."""


@dataclass
class Taken(Generic[B]):
    batch: B
    offsets: Offsets


@dataclass
class _Inflight:
    """Batches taken from the consumer and not yet written (guarded by `cond`)."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    count: int = 0
    written: Offsets = field(default_factory=dict)  # written, not yet committed


class BatchLoop(Generic[B]):
    """consume + prepare (consumer thread) | write with retries (event loop) -> commit.

    `run` is a coroutine that returns after `stop`; `host` runs it as a Faust service.
    """

    def __init__(self, settings: Settings, config: LoopConfig, handler: Handler[B]) -> None:
        self.settings = settings
        self.config = config
        self.handler = handler
        self.batches = 0  # written
        self._stop_requested = threading.Event()
        self._stop_async: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inflight = _Inflight()
        self._failures = 0
        self._up = [metrics.DEPENDENCY_UP.labels(dep) for dep in handler.dependencies]
        self._done = asyncio.Event()

    # lifecycle ---------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to stop (from any thread): the batch being retried is left uncommitted."""
        self._stop_requested.set()
        loop, stop_async = self._loop, self._stop_async
        if loop is not None and stop_async is not None:
            with contextlib.suppress(RuntimeError):  # the event loop is already closed
                loop.call_soon_threadsafe(stop_async.set)

    async def stopped(self) -> None:
        """Wait until a stopped loop has closed its consumer (at most `stop_timeout_s`)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._done.wait(), self.config.stop_timeout_s)

    @property
    def stopping(self) -> bool:
        return self._stop_requested.is_set()

    async def run(self) -> None:
        """Consume, write and commit until `stop`; raises if a write fails with a bug."""
        self._loop = asyncio.get_running_loop()
        self._stop_async = asyncio.Event()
        if self.stopping:
            self._stop_async.set()
        try:
            await self._run()
        finally:
            self._done.set()

    async def _run(self) -> None:
        c = self.config
        assert self._loop is not None and self._stop_async is not None
        executor = ThreadPoolExecutor(1, thread_name_prefix=f"{self.handler.name}-consumer")
        consumer = Consumer(batch_consumer_config(self.settings, c.group, fetch_wait_ms=c.fetch_wait_ms))
        queue: asyncio.Queue[Taken[B] | None] = asyncio.Queue()
        # Batches taken and not yet written: one finishing, one being written, one being prepared.
        slots = asyncio.Semaphore(3)
        writer = asyncio.ensure_future(self._write_loop(queue, slots))
        taking: asyncio.Future[Taken[B] | None] | None = None
        try:
            await self._in(executor, lambda: consumer.subscribe(list(c.topics), on_revoke=self._on_revoke))
            log.info("%s agent consuming %s as group %s", self.handler.name, ", ".join(c.topics), c.group)
            while not self.stopping:
                slot = asyncio.ensure_future(slots.acquire())
                await asyncio.wait([slot, writer], return_when=asyncio.FIRST_COMPLETED)
                if writer.done():
                    slot.cancel()
                    break
                taking = self._loop.run_in_executor(executor, self._take, consumer)
                # Shielded: a cancelled wait must not hide that the thread still uses the consumer.
                taken = await asyncio.shield(taking)
                taking = None
                if taken is None:
                    slots.release()
                    continue
                with self._inflight.cond:
                    self._inflight.count += 1
                queue.put_nowait(taken)
        finally:
            self._stop_requested.set()
            self._stop_async.set()
            if taking is not None:  # cancelled while consuming: let that consume() return first
                await asyncio.wait([taking])
            queue.put_nowait(None)
            await asyncio.wait([writer])
            try:
                await self._in(executor, lambda: self._close(consumer))
            finally:
                executor.shutdown(wait=False)
                self.handler.close()
        error = None if writer.cancelled() else writer.exception()
        if error is not None:
            raise error

    @staticmethod
    async def _in(executor: ThreadPoolExecutor, fn: Callable[[], object]) -> None:
        await asyncio.get_running_loop().run_in_executor(executor, fn)

    def _close(self, consumer: Consumer) -> None:
        self._commit(consumer, asynchronous=False)
        consumer.close()  # leave the group now rather than after the session timeout

    # consumer thread ---------------------------------------------------------------------------

    def _take(self, consumer: Consumer) -> Taken[B] | None:
        self._commit(consumer, asynchronous=True)
        c = self.config
        msgs = consumer.consume(num_messages=c.max_messages, timeout=c.within_s)
        if not msgs:
            return None
        items = decode(msgs)
        if not items:
            return None
        offsets: Offsets = {}
        for item in items:
            offsets[(item.topic, item.partition)] = item.offset + 1
        return Taken(self.handler.prepare(items), offsets)

    def _commit(self, consumer: Consumer, *, asynchronous: bool) -> None:
        with self._inflight.cond:
            written, self._inflight.written = self._inflight.written, {}
        if not written:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(written.items())]
        try:
            if asynchronous:
                consumer.commit(offsets=offsets, asynchronous=True)
            else:
                consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # Typically a rebalance took the partitions while the batch was being retried. The
            # batch is written; whoever owns the partitions now replays it to no change.
            log.warning("%s: offset commit failed (the batch is written; it is replayed): %s", self.handler.name, exc)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Inside consume(): hand the partitions over only once every batch taken is written and
        # committed (or abandoned on stop): the next owner must not write the same records at once.
        inflight = self._inflight
        with inflight.cond:
            while inflight.count and not self.stopping:
                inflight.cond.wait(0.2)
        self._commit(consumer, asynchronous=False)

    # event loop --------------------------------------------------------------------------------

    async def _write_loop(self, queue: asyncio.Queue[Taken[B] | None], slots: asyncio.Semaphore) -> None:
        finishing: asyncio.Future[None] | None = None  # the previous batch's `finish`, under way
        try:
            while True:
                taken = await queue.get()
                if taken is None or self.stopping:
                    if taken is not None:
                        log.info("%s: stopping with a batch unwritten; it is redelivered", self.handler.name)
                    return
                try:
                    finish = await self._retrying(partial(self.handler.write, taken.batch))
                    if finishing is not None:
                        await finishing  # batches are written in order: the previous one first
                        finishing = None
                except Stopping:
                    log.info("%s: stopping with a batch unwritten; it is redelivered", self.handler.name)
                    return
                if finish is None:
                    self._written(taken, slots)
                else:
                    finishing = asyncio.ensure_future(self._finish(taken, finish, slots))
        except BaseException:
            if finishing is not None:
                finishing.cancel()  # a bug or a cancelled worker: the batch stays uncommitted
            raise
        finally:
            if finishing is not None and not finishing.done():
                # A graceful stop completes the finish under way (its retries end on the stop).
                with contextlib.suppress(Stopping, asyncio.CancelledError):
                    await finishing
            with self._inflight.cond:
                self._inflight.count = 0
                self._inflight.cond.notify_all()

    async def _finish(self, taken: Taken[B], finish: Finish, slots: asyncio.Semaphore) -> None:
        await self._retrying(finish)
        self._written(taken, slots)

    def _written(self, taken: Taken[B], slots: asyncio.Semaphore) -> None:
        with self._inflight.cond:
            for key, offset in taken.offsets.items():
                self._inflight.written[key] = offset
            self._inflight.count -= 1
            self._inflight.cond.notify_all()
        slots.release()
        self.batches += 1

    async def _retrying(self, fn: Callable[[], Awaitable[T]]) -> T:
        c = self.config
        async for attempt in AsyncRetrying(
            wait=wait_exponential(multiplier=c.retry_initial_s, max=c.retry_max_s) + wait_random(0, c.retry_initial_s),
            retry=retry_if_exception(lambda exc: self.handler.dependency(exc) is not None),
            sleep=self._sleep,
            before_sleep=self._on_retry,
            reraise=True,
        ):
            with attempt:
                result = await fn()
        if self._failures:
            log.info("%s: recovered after %d failed attempts", self.handler.name, self._failures)
            self._failures = 0
        for gauge in self._up:
            gauge.set(1)
        return result

    async def _sleep(self, seconds: float) -> None:
        assert self._stop_async is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_async.wait(), seconds)
        if self.stopping:
            raise Stopping

    def _on_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        dep = self.handler.dependency(exc) if exc is not None else None
        dep = dep or "unknown"
        self._failures += 1
        metrics.DEPENDENCY_UP.labels(dep).set(0)
        metrics.DEPENDENCY_RETRIES.labels(dep).inc()
        wait = state.next_action.sleep if state.next_action else 0.0
        text = str(exc).strip()
        first_line = text.splitlines()[0] if text else repr(exc)
        log.warning(
            "%s: write failed (%s, attempt %d), retrying in %.1fs: %s",
            self.handler.name,
            dep,
            state.attempt_number,
            wait,
            first_line,
        )


def decode(msgs: list[Message]) -> list[Item]:
    """Messages as items; consumer errors (informational: librdkafka retries itself) are skipped."""
    items: list[Item] = []
    append = items.append
    for m in msgs:
        if m.error() is not None:
            log.warning("consumer error: %s", m.error())
            continue
        ts_type, ts_ms = m.timestamp()
        append(
            Item(
                m.value(),
                m.topic() or "",
                m.partition() or 0,
                m.offset() or 0,
                ts_ms / 1000 if ts_type and ts_ms > 0 else None,
            )
        )
    return items


class LoopService(faust.Service):
    """Runs a `BatchLoop` (the class attribute `batch_loop`) with the worker: if the loop dies, the
    worker crashes (and is restarted) rather than sit idle holding its partitions."""

    batch_loop: BatchLoop[Any]

    @faust.Service.task
    async def _run(self) -> None:
        name = self.batch_loop.handler.name
        try:
            await self.batch_loop.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("%s agent stopped unexpectedly", name)
            await self.crash(exc)
            return
        if not self.should_stop:
            await self.crash(RuntimeError(f"the {name} agent exited"))

    async def on_stop(self) -> None:
        self.batch_loop.stop()
        await self.batch_loop.stopped()


L = TypeVar("L", bound=BatchLoop[Any])


def host(app: faust.App, loop: L) -> L:
    """Run `loop` as a service of `app`, started and stopped with the worker."""
    name = f"{loop.handler.name.title()}Service"
    app.service(type(name, (LoopService,), {"batch_loop": loop, "__qualname__": name, "__module__": __name__}))
    return loop

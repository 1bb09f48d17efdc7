"""The ingest agent: memory.events -> policies -> memory.records + Redis hotset.

Consumes with a plain confluent-kafka consumer (group `worker_group`), run as a service of the
worker's Faust app. Faust's own per-message path (event objects, stream buffers, per-message
acks) cost about as much as every policy together and capped a worker below a bare forward
agent; librdkafka hands over a batch for a few microseconds a message (docs/performance.md).

Per batch (`consume(ingest_batch_max, ingest_batch_within_s)`): validate/redact/privacy per
message (pure), one Redis read for dedupe and supersession state, `plan` (pure), publish records
and dead letters (acks=all), one Lua write per tenant, then commit the Kafka offsets. A failure
retries the batch in place; nothing is committed before it is written, and every write is
idempotent, so a crash at any point replays safely. Batches are strictly sequential, so a
rebalance (it happens inside `consume`) never finds one half-written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

import faust
import orjson
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from redis.exceptions import RedisError
from redis.exceptions import ResponseError as RedisResponseError
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from app import metrics
from app.kafka import AsyncProducer, BrokerUnavailable, batch_consumer_config
from app.models import DeadLetter
from app.pipeline import Incoming, Intent, Prepared, dead_letter, plan, prepare, validate
from app.settings import Settings
from sinks.hotset import Hotset

log = logging.getLogger(__name__)

TRANSIENT = (RedisError, BrokerUnavailable, OSError)
# Publish -> visible latency is the point of the hotset: a short fetch wait (idle fetches are cheap).
FETCH_WAIT_MS = 10


class IngestProcessor:
    def __init__(self, settings: Settings, hotset: Hotset, producer: AsyncProducer) -> None:
        self.settings = settings
        self.hotset = hotset
        self.producer = producer

    def _stage(self, batch: list[Incoming]) -> tuple[list[Prepared], list[DeadLetter]]:
        prepared: list[Prepared] = []
        dead: list[DeadLetter] = []
        for msg in batch:
            event = validate(msg)
            if isinstance(event, DeadLetter):
                dead.append(event)
                continue
            try:
                prepared.append(prepare(event, msg.position))
            except Exception as exc:
                log.exception("prepare failed for %s", msg.position)
                dead.append(dead_letter(msg, f"{type(exc).__name__}: {exc}", "prepare", event.tenant_id))
        return prepared, dead

    async def _publish(self, intents: list[Intent], dead: list[DeadLetter]) -> None:
        s = self.settings
        messages: list[tuple[str, bytes | None, bytes]] = [
            (s.topic_records, f"{i.record.tenant_id}/{i.record.memory_id}".encode(), i.record_json)
            for i in intents
            if i.publishes
        ]
        messages.extend(
            (s.topic_deadletter, (d.tenant_id or "").encode() or None, orjson.dumps(d.model_dump(mode="json")))
            for d in dead
        )
        if messages:
            await self.producer.send_many(messages)

    async def _apply(self, intents: list[Intent]) -> None:
        try:
            await self.hotset.apply(intents)
        except RedisResponseError:
            # A script error is not transient: isolate the record that causes it.
            for intent in intents:
                try:
                    await self.hotset.apply([intent])
                except RedisResponseError as exc:
                    log.error("hotset rejected %s/%s: %s", intent.record.tenant_id, intent.record.memory_id, exc)
                    metrics.INGEST_EVENTS.labels("hotset_error").inc()

    async def process(self, batch: list[Incoming]) -> None:
        started = time.perf_counter()
        prepared, dead = self._stage(batch)
        async for attempt in AsyncRetrying(
            wait=wait_exponential_jitter(initial=0.1, max=10.0),
            retry=retry_if_exception_type(TRANSIENT),
            before_sleep=self._on_retry,
            reraise=True,
        ):
            with attempt:
                state = await self.hotset.read_state(prepared)
                intents = plan(prepared, state, self.settings.dedupe_window_seconds)
                await self._publish(intents, dead)
                await self._apply(intents)
                await self.hotset.count_dead_letters(len(dead))
        metrics.DEPENDENCY_UP.labels("redis").set(1)
        metrics.DEPENDENCY_UP.labels("kafka").set(1)
        self._observe(intents, dead)
        metrics.INGEST_BATCH_SECONDS.observe(time.perf_counter() - started)

    def _on_retry(self, state: Any) -> None:
        exc = state.outcome.exception() if state.outcome else None
        dep = "kafka" if isinstance(exc, BrokerUnavailable) else "redis"
        metrics.DEPENDENCY_UP.labels(dep).set(0)
        metrics.DEPENDENCY_RETRIES.labels(dep).inc()
        log.warning("ingest batch failed (%s), retrying: %s", dep, exc)

    @staticmethod
    def _observe(intents: list[Intent], dead: list[DeadLetter]) -> None:
        # Summed first: a labelled metric lookup costs more than the count itself.
        kinds = Counter(intent.kind for intent in intents)
        redactions: Counter[str] = Counter()
        for intent in intents:
            if intent.record.redactions:
                redactions.update(intent.record.redactions)
        for kind, n in kinds.items():
            metrics.INGEST_EVENTS.labels(kind).inc(n)
        for redaction, n in redactions.items():
            metrics.REDACTIONS.labels(redaction).inc(n)
        if dead:
            metrics.INGEST_EVENTS.labels("deadletter").inc(len(dead))
            for d in dead:
                log.info("dead letter from %s: %s", d.source, d.reason)


class IngestAgent:
    """consume a batch (in a thread: librdkafka waits without the GIL) -> process -> commit."""

    def __init__(self, settings: Settings, processor: IngestProcessor) -> None:
        self.settings = settings
        self.processor = processor
        self.stopping = asyncio.Event()
        self.batches = 0

    async def run(self) -> None:
        s = self.settings
        consumer = Consumer(batch_consumer_config(s, s.worker_group, fetch_wait_ms=FETCH_WAIT_MS))
        consumer.subscribe([s.topic_events])
        log.info("ingest agent consuming %s as group %s", s.topic_events, s.worker_group)
        loop = asyncio.get_running_loop()
        taking: asyncio.Future[list[Message]] | None = None
        try:
            while not self.stopping.is_set():
                taking = loop.run_in_executor(None, consumer.consume, s.ingest_batch_max, s.ingest_batch_within_s)
                # Shielded: a cancelled wait must not hide that the thread still uses the consumer.
                msgs = await asyncio.shield(taking)
                taking = None
                if msgs:
                    await self.handle(consumer, msgs)
        finally:
            if taking is not None:  # cancelled while consuming: let that consume() return first
                await asyncio.wait([taking])
            # Leave the group now rather than after the session timeout.
            await loop.run_in_executor(None, consumer.close)

    async def handle(self, consumer: Consumer, msgs: list[Message]) -> None:
        batch: list[Incoming] = []
        ends: dict[tuple[str, int], int] = {}
        for m in msgs:
            if m.error() is not None:
                # Partition EOF is off; anything else is informational (librdkafka retries itself).
                log.warning("consumer error: %s", m.error())
                continue
            msg = Incoming(m.value(), m.topic() or "", m.partition() or 0, m.offset() or 0)
            batch.append(msg)
            ends[(msg.topic, msg.partition)] = msg.offset + 1
        if not batch:
            return
        await self.processor.process(batch)
        self.batches += 1
        try:
            consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in ends.items()], asynchronous=True)
        except KafkaException as exc:
            # The batch is written; whoever owns the partitions next replays it to no change.
            log.warning("offset commit failed (the batch is written and will be replayed): %s", exc)


def register(app: faust.App, processor: IngestProcessor, settings: Settings) -> IngestAgent:
    """Run the ingest agent with `app` (started and stopped with the worker)."""
    agent = IngestAgent(settings, processor)

    @app.service
    class IngestService(faust.Service):
        """Runs the agent's loop; if it fails, the worker crashes (and is restarted) rather than
        sit idle holding its partitions."""

        @faust.Service.task
        async def _consume(self) -> None:
            try:
                await agent.run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("ingest agent stopped unexpectedly")
                await self.crash(exc)

        async def on_stop(self) -> None:
            agent.stopping.set()

    return agent

"""The ingest agent: memory.events -> policies -> memory.records + Redis hotset.

Per batch: validate/redact/privacy per message (pure), one Redis read for dedupe and
supersession state, `plan` (pure), publish records and dead letters (acks=all), one pipelined
Redis write, then ack the Kafka offsets. A failure retries in place; nothing is acked before it
is written, and every write is idempotent, so a crash at any point replays safely.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import faust
import orjson
from redis.exceptions import RedisError
from redis.exceptions import ResponseError as RedisResponseError
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from app import metrics
from app.kafka import AsyncProducer, BrokerUnavailable
from app.models import DeadLetter
from app.pipeline import Incoming, Intent, Prepared, dead_letter, plan, prepare, validate
from app.settings import Settings
from sinks.hotset import Hotset

log = logging.getLogger(__name__)

TRANSIENT = (RedisError, BrokerUnavailable, OSError)


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
        for intent in intents:
            metrics.INGEST_EVENTS.labels(intent.kind).inc()
            for kind, n in intent.record.redactions.items():
                metrics.REDACTIONS.labels(kind).inc(n)
        if dead:
            metrics.INGEST_EVENTS.labels("deadletter").inc(len(dead))
            for d in dead:
                log.info("dead letter from %s: %s", d.source, d.reason)


def register(app: faust.App, processor: IngestProcessor, settings: Settings) -> faust.types.AgentT[Any]:
    topic = app.topic(
        settings.topic_events, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )

    async def ingest(stream: Any) -> None:  # a faust Stream of raw-bytes events
        async for events in stream.noack_take(settings.ingest_batch_max, within=settings.ingest_batch_within_s):
            batch = [
                Incoming(e.message.value, e.message.topic, e.message.partition, e.message.offset)
                for e in events
            ]
            await processor.process(batch)
            for event in events:
                await stream.ack(event)

    return app.agent(topic, name="memstream.ingest", concurrency=1)(ingest)

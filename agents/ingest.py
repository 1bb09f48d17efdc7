"""The ingest agent: memory.events -> policies -> memory.records + Redis hotset.

A handler for the worker's batch-consumer loop (agents/loop.py: consume, retry, commit after the
write, rebalance safety), consuming as group `worker_group`. Per batch (`consume(ingest_batch_max,
ingest_batch_within_s)`): `prepare` runs validate/redact/privacy per message (pure, in the
consumer thread, while earlier batches are written); `write` does one Redis read for dedupe and
supersession state, `plan` (pure), publishes records and dead letters (acks=all) and builds the
hotset's script calls while the broker acknowledges; the `finish` it returns makes one Lua write
per tenant, which the loop runs while the next batch is read, planned and published. That batch
plans against the hotset's answer with this one's planned entries laid over it
(`carried_state`), so it decides what it would decide were the write already landed. A batch
with deletes plans only against a landed hotset and lands before `write` returns. A Redis or
broker failure retries in place (the loop); every write is idempotent, so a crash at any point
replays safely.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

import faust
import orjson
from redis.exceptions import RedisError
from redis.exceptions import ResponseError as RedisResponseError

from agents.loop import BatchLoop, Finish, Item, LoopConfig, host
from app import metrics
from app.kafka import AsyncProducer, BrokerUnavailable
from app.models import DeadLetter, MemoryType
from app.pipeline import (
    Incoming,
    Intent,
    Prepared,
    carried_state,
    dead_letter,
    future_skew,
    plan,
    prepare,
    record_messages,
    validate,
)
from app.settings import Settings
from sinks.hotset import ApplyCall, Hotset, HotsetState

log = logging.getLogger(__name__)

# Publish -> visible latency is the point of the hotset: a short fetch wait (idle fetches are cheap).
FETCH_WAIT_MS = 10


@dataclass
class Staged:
    """A batch after the stateless stages: events to plan and dead letters to publish."""

    prepared: list[Prepared]
    dead: list[DeadLetter]
    # The summaries' messages by position: `plan` may refuse one (drift guard) after staging.
    summaries: dict[tuple[str, int, int], Incoming] = field(default_factory=dict)


class IngestProcessor:
    """The ingest Handler: stateless stages in `prepare`, state + writes in `write`."""

    name = "ingest"
    dependencies = ("redis", "kafka")

    def __init__(self, settings: Settings, hotset: Hotset, producer: AsyncProducer) -> None:
        self.settings = settings
        self.hotset = hotset
        self.producer = producer
        self._ahead: HotsetState | None = None
        self._landed = asyncio.Event()  # no hotset write is under way
        self._landed.set()

    def prepare(self, items: list[Item]) -> Staged:
        prepared: list[Prepared] = []
        dead: list[DeadLetter] = []
        summaries: dict[tuple[str, int, int], Incoming] = {}
        for item in items:
            ts_ms = int(item.timestamp * 1000) if item.timestamp else None
            msg = Incoming(item.value, item.topic, item.partition, item.offset, ts_ms)
            event = validate(msg)
            if isinstance(event, DeadLetter):
                dead.append(event)
                continue
            skew = future_skew(event, msg.timestamp_ms, self.settings.max_event_skew_seconds)
            if skew is not None:
                dead.append(dead_letter(msg, skew, "skew", event.tenant_id))
                continue
            if event.type is MemoryType.SUMMARY:
                summaries[(msg.topic, msg.partition, msg.offset)] = msg
            try:
                prepared.append(prepare(event, msg.position))
            except Exception as exc:
                log.exception("prepare failed for %s", msg.position)
                dead.append(dead_letter(msg, f"{type(exc).__name__}: {exc}", "prepare", event.tenant_id))
        return Staged(prepared, dead, summaries)

    async def _publish(self, intents: list[Intent], dead: list[DeadLetter]) -> None:
        s = self.settings
        messages: list[tuple[str, bytes | None, bytes | None]] = [
            (s.topic_records, key, value) for key, value in record_messages(intents)
        ]
        messages.extend(
            (s.topic_deadletter, (d.tenant_id or "").encode() or None, orjson.dumps(d.model_dump(mode="json")))
            for d in dead
        )
        if messages:
            await self.producer.send_many(messages)

    async def _apply(self, intents: list[Intent], calls: list[ApplyCall]) -> None:
        try:
            await self.hotset.run(calls)
        except RedisResponseError:
            # A script error is not transient: isolate the record that causes it.
            for intent in intents:
                try:
                    await self.hotset.apply([intent])
                except RedisResponseError as exc:
                    log.error("hotset rejected %s/%s: %s", intent.record.tenant_id, intent.record.memory_id, exc)
                    metrics.INGEST_EVENTS.labels("hotset_error").inc()

    async def write(self, batch: Staged) -> Finish | None:
        started = time.perf_counter()
        forgets = any(p.event.op == "delete" for p in batch.prepared)
        if forgets:
            # A delete reads the record it forgets and the turns around it, and removes entries: it
            # plans against the hotset as the previous batch left it, and is not carried forward.
            await self._landed.wait()
        ahead = self._ahead  # the previous batch's planned state, while its hotset write is under way
        state = await self.hotset.read_state(batch.prepared)
        if ahead is not None:
            state.carry(ahead)
        intents = plan(batch.prepared, state, self.settings.dedupe_window_seconds)
        dead = batch.dead + _refusals(intents, batch.summaries)
        # Records are acknowledged before the hotset (and its event ledger) is written: an event
        # the ledger holds always has its record on the topic. The hotset's script calls are
        # built while the broker acknowledges; nothing is written until it has.
        publish = asyncio.ensure_future(self._publish(intents, dead))
        try:
            await asyncio.sleep(0)  # the publish task produces the batch, then waits for the acks
            calls = self.hotset.calls(intents)
        finally:
            await publish
        if forgets:
            await self._land(intents, calls, dead, started)
            return None
        # The hotset write runs (in the loop) while the next batch is read, planned and
        # published; that batch reads this one's entries from `_ahead` until the write lands.
        mine = self._ahead = carried_state(batch.prepared, state)
        self._landed.clear()

        async def finish() -> None:
            await self._land(intents, calls, dead, started)
            if self._ahead is mine:
                self._ahead = None
                self._landed.set()

        return finish

    async def _land(
        self, intents: list[Intent], calls: list[ApplyCall], dead: list[DeadLetter], started: float
    ) -> None:
        await self._apply(intents, calls)
        await self.hotset.count_dead_letters([d.tenant_id for d in dead])
        self._observe(intents, dead)
        metrics.INGEST_BATCH_SECONDS.observe(time.perf_counter() - started)

    def dependency(self, exc: BaseException) -> str | None:
        if isinstance(exc, BrokerUnavailable):
            return "kafka"
        if isinstance(exc, RedisError | OSError):
            return "redis"
        return None  # a bug: retrying would not help

    def close(self) -> None:
        """Forget the planned state of a batch whose hotset write did not land (it is replayed);
        the Redis client and producer are the worker's (shared), closed by it."""
        self._ahead = None
        self._landed.set()

    @staticmethod
    def _observe(intents: list[Intent], dead: list[DeadLetter]) -> None:
        # Summed first: a labelled metric lookup costs more than the count itself. A re-index (of
        # the turn after a forgotten one) is not an event: it is not counted.
        intents = [i for i in intents if i.kind != "reindex"]
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


def _refusals(intents: list[Intent], messages: dict[tuple[str, int, int], Incoming]) -> list[DeadLetter]:
    """Dead letters for the events `plan` refused (a summary citing missing memories)."""
    out = []
    for intent in intents:
        if intent.kind != "refused":
            continue
        src = intent.record.source
        msg = messages.get((src.topic, src.partition, src.offset)) if src else None
        if msg is not None:
            out.append(dead_letter(msg, intent.reason or "refused", "drift", intent.record.tenant_id))
    return out


def register(app: faust.App, processor: IngestProcessor, settings: Settings) -> BatchLoop[Staged]:
    """Run the ingest agent with `app` (started and stopped with the worker)."""
    config = LoopConfig(
        topics=(settings.topic_events,),
        group=settings.worker_group,
        max_messages=settings.ingest_batch_max,
        within_s=settings.ingest_batch_within_s,
        fetch_wait_ms=FETCH_WAIT_MS,
        retry_initial_s=0.1,
        retry_max_s=10.0,
    )
    return host(app, BatchLoop(settings, config, processor))

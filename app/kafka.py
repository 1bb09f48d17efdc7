"""Kafka adapters on confluent-kafka: topic creation and an async, acks=all producer."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential_jitter

from app.settings import Settings
from topics import declared_topics

log = logging.getLogger(__name__)


class BrokerUnavailable(RuntimeError):
    """The broker did not acknowledge a write."""


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create every declared topic that is missing; returns the names created."""
    admin = AdminClient({**settings.kafka_client_config(), "socket.timeout.ms": 5000})
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [t for t in declared_topics(settings) if t.name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [
            NewTopic(t.name, num_partitions=t.partitions, replication_factor=t.replication, config=t.config)
            for t in missing
        ],
        operation_timeout=timeout_s,
    )
    created = []
    for name, fut in futures.items():
        try:
            fut.result(timeout=timeout_s)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return created


async def ensure_topics_with_retry(settings: Settings, deadline_s: float = 120.0) -> list[str]:
    """Start-up: wait for the broker with backoff instead of crash-looping."""
    async for attempt in AsyncRetrying(
        wait=wait_exponential_jitter(initial=0.2, max=5.0),
        stop=stop_after_delay(deadline_s),
        retry=retry_if_exception_type(KafkaException),
        reraise=True,
    ):
        with attempt:
            return await asyncio.to_thread(ensure_topics, settings, 10.0)
    return []  # pragma: no cover


def batch_consumer_config(settings: Settings, group: str, fetch_wait_ms: int = 100) -> dict[str, Any]:
    """A confluent consumer that commits by hand, only after its batch is written."""
    return {
        **settings.kafka_client_config(),
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": int(settings.kafka_session_timeout_s * 1000),
        "heartbeat.interval.ms": int(settings.kafka_heartbeat_s * 1000),
        # A dependency outage keeps one batch in retry without calling consume(): after this long
        # the group gives the partitions to another member and our late commit fails (harmless:
        # the batch is written, and the redelivery writes no change).
        "max.poll.interval.ms": 600_000,
        # Some brokers (Tansu) hold a fetch for the whole wait even when data arrives meanwhile:
        # this bounds the latency it adds.
        "fetch.wait.max.ms": fetch_wait_ms,
        "enable.partition.eof": False,
    }


@dataclass(frozen=True)
class Delivered:
    topic: str
    partition: int
    offset: int


class AsyncProducer:
    """One confluent producer shared by a process; `send` resolves when the broker acknowledged.

    A background thread polls for delivery reports. A fatal producer error (an idempotent
    producer after a broker restart) recreates the producer: nothing acknowledged is lost, and
    unacknowledged sends fail so the caller can retry or refuse.
    """

    def __init__(self, settings: Settings, **overrides: Any) -> None:
        self._conf = {
            **settings.kafka_client_config(),
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 2,
            "compression.type": "lz4",
            "message.timeout.ms": 15000,
            "socket.timeout.ms": 5000,
            "retry.backoff.ms": 100,
            "retry.backoff.max.ms": 2000,
            **overrides,
        }
        self._lock = threading.Lock()
        self._producer: Producer | None = Producer({**self._conf, "error_cb": self._on_error})
        self._fatal = False
        self._pending: set[asyncio.Future[list[Delivered]]] = set()  # unresolved send_many calls
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll_loop, name="kafka-producer-poll", daemon=True)
        self._thread.start()

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            log.error("kafka producer fatal error, recreating: %s", err)
            self._fatal = True
        else:
            log.debug("kafka producer error: %s", err)

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                producer = self._producer
            if producer is None:
                return
            producer.poll(0.05)
            if self._fatal:
                self._recreate()

    def _recreate(self) -> None:
        with self._lock:
            old = self._producer
            if old is None:
                return
            self._producer = Producer({**self._conf, "error_cb": self._on_error})
            self._fatal = False
        old.purge()
        old.poll(0)

    async def send(self, topic: str, value: bytes | None, key: bytes | None = None) -> Delivered:
        futs = await self.send_many([(topic, key, value)])
        return futs[0]

    async def send_many(self, messages: Sequence[tuple[str, bytes | None, bytes | None]]) -> list[Delivered]:
        """Produce messages in order (a None value is a tombstone); resolve when all are
        acknowledged (raises BrokerUnavailable).

        One future per call, completed from the poll thread when the last delivery report
        arrives: per-message futures and loop wake-ups cost more than the produce itself.
        """
        if not messages:
            return []
        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[Delivered]] = loop.create_future()
        self._pending.add(done)
        done.add_done_callback(self._pending.discard)
        results: list[Delivered | None] = [None] * len(messages)
        state = {"pending": len(messages), "error": ""}
        guard = threading.Lock()

        def callback_for(i: int) -> Any:
            def cb(err: KafkaError | None, msg: Message) -> None:
                with guard:
                    if err is not None:
                        why = CLOSED if err.code() in _PURGED else str(err)
                        state["error"] = state["error"] or why
                    else:
                        results[i] = Delivered(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
                    state["pending"] -= 1  # type: ignore[operator]
                    last = state["pending"] == 0
                if last:
                    loop.call_soon_threadsafe(_finish, done, results, str(state["error"]))

            return cb

        with self._lock:
            producer = self._producer
        if producer is None:
            raise BrokerUnavailable("the producer is closed")
        for i, (topic, key, value) in enumerate(messages):
            while True:
                try:
                    producer.produce(topic, value=value, key=key, on_delivery=callback_for(i))
                    break
                except BufferError:
                    await asyncio.sleep(0.01)  # local queue full: let the poll thread drain it
                except KafkaException as exc:
                    raise BrokerUnavailable(str(exc)) from exc
        return await done

    def close(self, timeout_s: float = 10.0) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None and producer.flush(timeout_s):
            # Undelivered after the timeout (the broker is gone): drop them, so librdkafka's
            # handle can go instead of reconnecting to a dead broker for the life of the process.
            producer.purge()
            producer.poll(0)
        self._stop.set()
        self._thread.join(timeout=2)
        # Nothing will serve delivery reports any more: a send still waiting fails instead of hanging.
        for fut in list(self._pending):
            fut.get_loop().call_soon_threadsafe(_finish, fut, [], CLOSED)
        # The last reference: librdkafka's threads stop (and stop reconnecting to a dead broker).
        del producer


CLOSED = "the producer was closed before the broker acknowledged"
_PURGED = (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT)


def _finish(fut: asyncio.Future[list[Delivered]], results: list[Delivered | None], error: str) -> None:
    if fut.done():
        return
    if error:
        fut.set_exception(BrokerUnavailable(error))
    else:
        fut.set_result([r for r in results if r is not None])


def committed_offsets(settings: Settings, group: str, topic: str, timeout_s: float = 5.0) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**settings.kafka_client_config(), "group.id": group, "enable.auto.commit": False})
    try:
        md = consumer.list_topics(topic, timeout=timeout_s)
        parts = [TopicPartition(topic, p) for p in md.topics[topic].partitions]
        return {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=timeout_s)}
    finally:
        consumer.close()


def publish_sync(settings: Settings, messages: list[tuple[bytes | None, bytes]], topic: str) -> dict[int, int]:
    """Publish with acks=all; return the next offset after the last message, per partition.

    Offsets come from delivery reports: some brokers (Tansu) under-report the log end in
    ListOffsets, so watermarks cannot tell when a consumer has caught up.
    """
    producer = Producer({**settings.kafka_client_config(), "acks": "all", "linger.ms": 5})
    ends: dict[int, int] = {}
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(str(err))
            return
        p, o = msg.partition() or 0, msg.offset() or 0
        ends[p] = max(ends.get(p, 0), o + 1)

    for i, (key, value) in enumerate(messages):
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        if i % 1000 == 0:
            producer.poll(0)
    if producer.flush(60) or errors:
        raise BrokerUnavailable(f"not acknowledged: {errors[:3] or 'flush timed out'}")
    return ends


def caught_up(settings: Settings, group: str, topic: str, ends: dict[int, int]) -> bool:
    done = committed_offsets(settings, group, topic)
    return all(done.get(p, -1) >= end for p, end in ends.items())

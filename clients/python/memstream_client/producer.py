"""A producer for high-volume writers: validated events straight to `memory.events` with
confluent-kafka (key = tenant id, acks=all, idempotent). Needs the `[producer]` extra."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

from pydantic import ValidationError

from memstream_client.errors import DeliveryFailed, EventInvalid, MemstreamError
from memstream_client.event import MemoryEvent

TOPIC = "memory.events"


@dataclass(frozen=True)
class DeliveryReport:
    """What the broker said about one event: its position, or the error."""

    event_id: str
    tenant_id: str
    topic: str
    partition: int | None
    offset: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


def build_event(event: MemoryEvent | Mapping[str, Any]) -> MemoryEvent:
    """The event validated; a mapping without `event_id`, `schema_version` or `occurred_at`
    gets a random id, version 1 and the current time."""
    if isinstance(event, MemoryEvent):
        return event
    data = dict(event)
    data.setdefault("schema_version", 1)
    data.setdefault("event_id", f"sdk-{uuid.uuid4()}")
    data.setdefault("occurred_at", datetime.now(UTC).isoformat())
    try:
        return MemoryEvent.model_validate(data)
    except ValidationError as exc:
        raise EventInvalid(f"invalid memory event: {exc}", "event_invalid", exc.errors(include_url=False)) from exc


class MemstreamProducer:
    """Publishes memory events; the worker processes them like any other.

    `bootstrap_servers` and `config` are passed to confluent-kafka (add security settings there);
    `topic` includes any MEMSTREAM_TOPIC_PREFIX. `on_delivery` gets a DeliveryReport per event
    (from `poll()`, `send()` and `flush()`); failed reports are also kept in `failed`. `close()`
    (or leaving the `with` block) flushes and raises DeliveryFailed if an event was not
    acknowledged."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic: str = TOPIC,
        config: Mapping[str, Any] | None = None,
        on_delivery: Callable[[DeliveryReport], None] | None = None,
    ) -> None:
        try:
            from confluent_kafka import Producer
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise MemstreamError("MemstreamProducer needs `pip install memstream-client[producer]`") from exc
        self.topic = topic
        self.on_delivery = on_delivery
        self.failed: list[DeliveryReport] = []
        self.delivered = 0
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap_servers,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 5,
                "compression.type": "lz4",
                **(config or {}),
            }
        )

    def send(self, event: MemoryEvent | Mapping[str, Any]) -> MemoryEvent:
        """Validate and enqueue one event (key = its tenant id); returns the event as sent."""
        ev = build_event(event)

        def report(err: Any, msg: Any) -> None:
            rep = DeliveryReport(
                ev.event_id,
                ev.tenant_id,
                self.topic,
                None if err else msg.partition(),
                None if err else msg.offset(),
                str(err) if err else None,
            )
            if rep.ok:
                self.delivered += 1
            else:
                self.failed.append(rep)
            if self.on_delivery:
                self.on_delivery(rep)

        value = ev.to_json()
        while True:
            try:
                self._producer.produce(self.topic, value=value, key=ev.tenant_id.encode(), on_delivery=report)
                break
            except BufferError:
                self._producer.poll(0.1)  # the local queue is full: serve delivery reports, then retry
        self._producer.poll(0)
        return ev

    def poll(self, timeout_s: float = 0) -> int:
        """Serve pending delivery reports."""
        return int(self._producer.poll(timeout_s))

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for every enqueued event's delivery report; returns how many are still pending."""
        return int(self._producer.flush(timeout_s))

    def close(self, timeout_s: float = 30.0) -> None:
        pending = self.flush(timeout_s)
        if pending or self.failed:
            raise DeliveryFailed(
                f"{pending} event(s) undelivered after {timeout_s}s, {len(self.failed)} failed",
                "delivery_failed",
                {"pending": pending, "failed": [r.event_id for r in self.failed]},
            )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.flush()

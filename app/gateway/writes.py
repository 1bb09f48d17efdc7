"""Writes: request bodies become contract events on `memory.events` (key = tenant, acks=all)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pydantic import ValidationError
from redis.exceptions import RedisError

from app.auth.asgi import CURRENT_REQUEST_ID
from app.gateway import gmetrics
from app.gateway.errors import ApiError, validation_error
from app.gateway.reads import HotsetReader
from app.gateway.schemas import EventFields, WriteStatus
from app.kafka import AsyncProducer, BrokerUnavailable, Delivered
from app.models import MemoryEvent, make_version
from app.pipeline import event_identifiers, redact
from app.redact import refused_identifier
from app.settings import Settings
from sinks.hotset import keys

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Written:
    event: MemoryEvent
    delivered: Delivered
    # The tenant's own write sequence number: what a write answer shows as `offset`. The Kafka
    # offset counts every tenant's writes on the partition, so it stays out of answers.
    seq: int = -1

    @property
    def memory_id(self) -> str:
        return self.event.resolved_memory_id()

    @property
    def version(self) -> str:
        return make_version(self.event.occurred_at, self.delivered.offset)

    def result(self, status: WriteStatus) -> dict[str, Any]:
        return {
            "event_id": self.event.event_id,
            "memory_id": self.memory_id,
            "topic": self.delivered.topic,
            "partition": self.delivered.partition,
            "offset": self.seq,
            "version": self.version,
            "status": status,
        }


def build_event(fields: EventFields, tenant: str, loc: tuple[str | int, ...] = ("body",)) -> MemoryEvent:
    """The contract event for a request: tenant from the credentials, defaults filled in."""
    if fields.tenant_id is not None and fields.tenant_id != tenant:
        raise ApiError(403, "tenant_id does not match the caller's tenant", details={"loc": ".".join(map(str, loc))})
    data = fields.model_dump(exclude_none=True)
    data["tenant_id"] = tenant
    data.setdefault("event_id", str(uuid.uuid4()))
    data.setdefault("occurred_at", datetime.now(UTC))
    return validated(data, loc)


def stamp_after(now: datetime, occurred: datetime | None) -> datetime:
    """An event time that orders after `occurred` (a version stamped in the future by a client
    clock ahead of ours), so a delete or an ack is the newer version and is applied."""
    return now if occurred is None else max(now, occurred + timedelta(milliseconds=1))


def validated(data: dict[str, Any], loc: tuple[str | int, ...] = ("body",)) -> MemoryEvent:
    """The event as it may be published: valid, no identifier holding a secret (422), and every
    free-text field redacted, so that `memory.events` never holds what the caller sent raw."""
    try:
        event = MemoryEvent.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, loc) from exc
    refusal = refused_identifier(event_identifiers(event))
    if refusal is not None:
        where = ".".join(map(str, (*loc, refusal.field)))
        raise ApiError(
            422,
            refusal.reason,
            details=[{"loc": where, "msg": refusal.reason, "type": "secret_in_identifier"}],
        )
    return redact(event)[0]


def encode(event: MemoryEvent) -> bytes:
    return orjson.dumps(event.model_dump(mode="json", exclude_none=True))


class Publisher:
    def __init__(self, settings: Settings, producer: AsyncProducer, reader: HotsetReader) -> None:
        self.settings = settings
        self.producer = producer
        self.reader = reader

    async def publish(self, events: list[MemoryEvent]) -> list[Written]:
        """Resolve once the broker acknowledged every event (acks=all); 503 otherwise."""
        topic = self.settings.topic_events
        request_id = CURRENT_REQUEST_ID.get()
        if request_id is not None:
            events = [e if e.request_id else e.model_copy(update={"request_id": request_id}) for e in events]
        try:
            delivered = await self.producer.send_many([(topic, e.tenant_id.encode(), encode(e)) for e in events])
        except BrokerUnavailable as exc:
            gmetrics.PUBLISHED.labels("unavailable").inc(len(events))
            raise ApiError(
                503,
                "the broker did not acknowledge the write; nothing was accepted",
                "broker_unavailable",
                details={"reason": str(exc)[:300]},
            ) from exc
        gmetrics.PUBLISHED.labels("acked").inc(len(events))
        first = await self.tenant_sequence(events[0].tenant_id, len(events)) if events else -1
        return [
            Written(e, d, first + i if first >= 0 else -1)
            for i, (e, d) in enumerate(zip(events, delivered, strict=True))
        ]

    async def tenant_sequence(self, tenant: str, n: int) -> int:
        """The first of `n` numbers of the tenant's write sequence (-1 when Redis cannot say:
        the write is accepted all the same)."""
        try:
            last = int(await self.reader.redis.incrby(keys.write_seq(tenant), n))
        except RedisError as exc:
            log.debug("write sequence unavailable: %s", exc)
            return -1
        return last - n + 1

    async def wait_visible(self, written: list[Written]) -> list[WriteStatus]:
        """Poll the hotset until each write is readable (version stored >= ours) or was processed
        without being stored (the event-id ledger has it); 504 at the deadline, also when Redis
        cannot answer (the broker has the write: it is accepted, only not seen visible)."""
        deadline = time.monotonic() + self.settings.wait_visible_timeout_s
        status: list[WriteStatus | None] = [None] * len(written)
        delay = 0.005
        while True:
            todo = [i for i, s in enumerate(status) if s is None]
            try:
                # Bounded by the deadline: a slow Redis must not hold the caller past it.
                async with asyncio.timeout(max(0.001, deadline - time.monotonic())):
                    progress = await self.reader.progress(
                        [(written[i].event.tenant_id, written[i].memory_id, written[i].event.event_id) for i in todo]
                    )
            except (RedisError, TimeoutError) as exc:
                log.debug("visibility poll failed (the write is accepted): %s", exc)
                progress = [(None, False)] * len(todo)
            for i, (v, seen) in zip(todo, progress, strict=True):
                if v is not None and v >= written[i].version:
                    status[i] = "visible"
                elif seen:
                    status[i] = "skipped"
            if all(s is not None for s in status):
                return [s for s in status if s is not None]
            if time.monotonic() >= deadline:
                pending = [w.result("accepted") for w, s in zip(written, status, strict=True) if s is None]
                raise ApiError(
                    504,
                    "accepted by the broker but not visible within the wait timeout",
                    "visibility_timeout",
                    details={"timeout_s": self.settings.wait_visible_timeout_s, "pending": pending},
                )
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.05)

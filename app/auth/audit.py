"""Audit entries (pure): who did what to which ids, with what result — never content or secrets.

The entry carries ids only. `details` passes through an allow-list of short scalar fields, so a
caller cannot smuggle memory text, query strings, tokens or keys into the audit trail by mistake.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from prometheus_client import Counter
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_chain, wait_fixed, wait_none

from app.auth.principal import Principal
from app.auth.rbac import Action
from app.models import AuditEntry

log = logging.getLogger(__name__)

MAX_RESOURCE_IDS = 100
MAX_ID_CHARS = 128
MAX_DETAIL_CHARS = 128
# Fields that describe a request without revealing memory content (counts, scopes, sources).
DETAIL_KEYS = frozenset(
    {
        "accepted",
        "agent_id",
        "as_agent",
        "count",
        "deletes_published",
        "hotset_found",
        "examined",
        "kind",
        "limit",
        "memory_type",
        "method",
        "partial",
        "reason",
        "rejected",
        "retry_after_s",
        "route",
        "scheme",
        "session_id",
        "source",
        "subject_type",
        "to_agent",
        "wait",
        "warehouse_found",
        "warehouse_rows_erased",
        "warehouse_vectors_erased",
    }
)


def safe_details(details: Mapping[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (details or {}).items():
        if key not in DETAIL_KEYS:
            continue
        if isinstance(value, bool | int | float) or value is None:
            out[key] = value
        elif isinstance(value, str):
            out[key] = value[:MAX_DETAIL_CHARS]
    return out


class _Ids:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count()


_IDS = _Ids()
os.register_at_fork(after_in_child=_IDS.reset)  # a forked child must not repeat its parent's ids


def unique_id() -> str:
    """32 hex digits, unique per process (random prefix, then a counter): log and request ids
    need uniqueness, not secrecy, and a counter costs no system call per id."""
    return f"{_IDS.prefix}{next(_IDS.counter) & 0xFFFFFFFFFFFFFFFF:016x}"


def audit_entry(
    principal: Principal,
    action: Action | str,
    *,
    status_code: int,
    latency_ms: float,
    request_id: str | None = None,
    resource_type: str | None = None,
    resource_ids: Iterable[str] = (),
    details: Mapping[str, Any] | None = None,
    ts: datetime | None = None,
    log_id: str | None = None,
) -> AuditEntry:
    ids = list(dict.fromkeys(i[:MAX_ID_CHARS] for i in resource_ids if i))
    extra = safe_details(details)
    if len(ids) > MAX_RESOURCE_IDS:
        extra["resource_ids_total"] = len(ids)
        ids = ids[:MAX_RESOURCE_IDS]
    if principal.agent_id is not None:
        extra["as_agent"] = principal.agent_id
    extra.setdefault("kind", principal.kind)
    action_name = str(action.value if isinstance(action, Action) else action)
    if not 100 <= status_code <= 599 or not 0 < len(action_name) <= 64:
        raise ValueError(f"not an auditable outcome: {action_name!r} {status_code}")
    if resource_type is not None and len(resource_type) > 64:
        raise ValueError("resource_type longer than 64 characters")
    # Every value is within the entry's bounds here (the principal's tenant is validated when it
    # is authenticated): built without re-validation, once per request.
    return AuditEntry.trusted(
        log_id=(log_id or unique_id())[:64],
        ts=ts or datetime.now(UTC),
        tenant_id=principal.tenant_id,
        principal=principal.principal_id[:256],
        action=action_name,
        resource_type=resource_type,
        resource_ids=ids,
        success=status_code < 400,
        status_code=status_code,
        latency_ms=max(0.0, round(latency_ms, 3)),
        request_id=request_id[:64] if request_id else None,
        details=extra,
    )


class Producer(Protocol):
    """What the sink needs of app.kafka.AsyncProducer (one per process, shared)."""

    async def send_many(self, messages: list[tuple[str, bytes | None, bytes]]) -> list[Any]: ...


AUDIT_ENTRIES = Counter(
    "memstream_audit_entries_total",
    "Audit entries by outcome: published, dropped (queue full or broker down for too long)",
    ["outcome"],
)


class AuditSink:
    """Publishes audit entries to `memory.audit` off the request path, in batches, in order.

    A batch gathers what arrives within `linger_s` of its first entry: one produce and one
    delivery wake-up per batch rather than per request, which keeps the producer threads off the
    request path's CPU (docs/performance.md). `submit` never blocks a request. The queue is bounded: when
    the broker is down long enough to fill it, entries are dropped, counted and logged rather than
    exhausting memory. `close` flushes what is queued (the gateway calls it on shutdown).
    """

    def __init__(
        self,
        producer: Producer,
        topic: str,
        max_queue: int = 10_000,
        max_batch: int = 500,
        retry_s: tuple[float, ...] = (0.2, 1.0, 3.0),
        linger_s: float = 0.05,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.retry_s = retry_s
        # Any producer failure is retried after each delay of `retry_s` in turn; then the batch
        # is counted as lost.
        self._retrying = AsyncRetrying(
            retry=retry_if_exception_type(Exception),
            wait=wait_chain(*(wait_fixed(d) for d in retry_s)) if retry_s else wait_none(),
            stop=stop_after_attempt(len(retry_s) + 1),
            reraise=True,
        )
        self._queue: asyncio.Queue[AuditEntry] = asyncio.Queue(max_queue)
        self._task: asyncio.Task[None] | None = None

    def submit(self, entry: AuditEntry) -> bool:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="audit-sink")
        try:
            self._queue.put_nowait(entry)
        except asyncio.QueueFull:
            AUDIT_ENTRIES.labels("dropped").inc()
            log.error("audit queue full: dropped an entry for tenant %s", entry.tenant_id)
            return False
        return True

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if self.linger_s > 0 and self._queue.qsize() < self.max_batch:
                await asyncio.sleep(self.linger_s)
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._publish(batch)
            for _ in batch:
                self._queue.task_done()

    async def _publish(self, batch: list[AuditEntry]) -> None:
        messages: list[tuple[str, bytes | None, bytes]] = [
            (self.topic, e.tenant_id.encode(), e.to_json()) for e in batch
        ]
        try:
            await self._retrying(self.producer.send_many, messages)
        except Exception as exc:  # noqa: BLE001 - any producer failure, after the retries: count the loss
            AUDIT_ENTRIES.labels("dropped").inc(len(batch))
            log.error("audit: dropped %d entries after retries: %s", len(batch), exc)
            return
        AUDIT_ENTRIES.labels("published").inc(len(batch))

    async def flush(self, timeout_s: float = 5.0) -> None:
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout_s)

    async def close(self, timeout_s: float = 5.0) -> None:
        await self.flush(timeout_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

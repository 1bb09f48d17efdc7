"""Erasure and export by data subject (GDPR art. 17 and 15): a `user_id`, `agent_id` or
`session_id` within one tenant.

Erasure goes through the pipeline: it finds every live memory of the subject in the hotset and
in the warehouse, publishes one delete event per memory on `memory.events` (the worker applies
it as any delete: hotset tombstone, index and dedupe entries dropped, the delete record and a
null-value tombstone on `memory.records`, the warehouse row made a tombstone by the sink), then
erases the warehouse rows directly so that rows no hotset holds, and rows the sink has not yet
reached, lose their content now, and their vectors in MEMORY_VECTORS with them (the embedding
agent drops the hotset vectors, and leaves a vectorless row for the delete, when the worker's
delete record reaches it). Delete event ids derive from (memory id, version): running an
erasure twice publishes nothing new for what the first run erased. One audit entry on
`memory.audit` carries the counts, never ids or content.

Export reads the warehouse (the system of record) and overlays the hotset's newer copies.

The policies (`holds`, `delete_event`, `merge_newest`, `report`) are pure; `SubjectStores` is the
thin adapter over Redis, Snowflake and Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

import orjson
import redis.asyncio as aioredis
import snowflake.connector
from snowflake.connector import SnowflakeConnection

from app.auth.audit import unique_id
from app.kafka import AsyncProducer
from app.models import AuditEntry, MemoryEvent, MemoryRecord
from app.settings import Settings
from app.snowflake_conn import connect_kwargs
from app.text import digest
from sinks.hotset import keys, layout
from sinks.warehouse import SELECT_RECORDS, row_to_record

log = logging.getLogger(__name__)

SubjectType = Literal["user_id", "agent_id", "session_id"]
SUBJECT_TYPES: tuple[str, ...] = get_args(SubjectType)
MGET_CHUNK = 1000
# What a forgotten warehouse row keeps: ids, version, type, visibility, times. Everything else
# (content, metadata, subject ids, key, citations) goes. The sink's MERGE leaves a tombstone so.
FORGOTTEN_SET = (
    "content = NULL, metadata = PARSE_JSON('{}'), key = NULL, agent_id = NULL, user_id = NULL, "
    "session_id = NULL, channel_id = NULL, citations = PARSE_JSON('[]'), importance = NULL, "
    "redactions = PARSE_JSON('{}')"
)


@dataclass(frozen=True)
class Subject:
    type: SubjectType
    id: str

    def __post_init__(self) -> None:
        if self.type not in SUBJECT_TYPES:
            raise ValueError(f"subject_type must be one of {', '.join(SUBJECT_TYPES)}")
        if not self.id or len(self.id) > 128:
            raise ValueError("subject_id must be 1 to 128 characters")


# ---- pure policies --------------------------------------------------------------------------------


def holds(rec: MemoryRecord, subject: Subject) -> bool:
    """A live record about the subject."""
    return not rec.deleted and getattr(rec, subject.type) == subject.id


def merge_newest(*sources: Iterable[MemoryRecord]) -> dict[str, MemoryRecord]:
    """memory id -> the newest version among the sources."""
    out: dict[str, MemoryRecord] = {}
    for records in sources:
        for rec in records:
            cur = out.get(rec.memory_id)
            if cur is None or rec.version > cur.version:
                out[rec.memory_id] = rec
    return out


def delete_event(rec: MemoryRecord, now: datetime) -> MemoryEvent:
    """The delete that erases `rec`. Its id derives from the memory and the version it erases (a
    re-run is a replay to the worker); its time orders after the record's, as the gateway's DELETE."""
    occurred = max(now, rec.occurred_at + timedelta(milliseconds=1))
    return MemoryEvent.model_validate(
        {
            "schema_version": 1,
            "event_id": f"erase-{digest(rec.tenant_id, rec.memory_id, rec.version)[:40]}",
            "op": "delete",
            "tenant_id": rec.tenant_id,
            "memory_id": rec.memory_id,
            "occurred_at": occurred,
        }
    )


@dataclass
class ErasureReport:
    tenant_id: str
    subject_type: str
    hotset_found: int = 0
    warehouse_found: int = 0
    memories: int = 0
    deletes_published: int = 0
    warehouse_rows_erased: int = 0
    warehouse_vectors_erased: int = 0
    hotset_tombstones: int | None = None  # confirmed by polling; None when not waited for
    audit_log_id: str = ""
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "subject_type": self.subject_type,
            "memories": self.memories,
            "stores": {
                "hotset": {
                    "found": self.hotset_found,
                    "delete_events": self.deletes_published,
                    "tombstones_confirmed": self.hotset_tombstones,
                },
                "warehouse": {
                    "found": self.warehouse_found,
                    "rows_erased": self.warehouse_rows_erased,
                    "vectors_erased": self.warehouse_vectors_erased,
                },
                "memory.records": {"tombstones": self.deletes_published, "published_by": "worker"},
            },
            "audit_log_id": self.audit_log_id,
            "seconds": round(self.seconds, 3),
        }

    def counts(self) -> dict[str, int]:
        """What the audit entry records: counts only."""
        return {
            "count": self.memories,
            "hotset_found": self.hotset_found,
            "warehouse_found": self.warehouse_found,
            "deletes_published": self.deletes_published,
            "warehouse_rows_erased": self.warehouse_rows_erased,
            "warehouse_vectors_erased": self.warehouse_vectors_erased,
        }


def export_line(rec: MemoryRecord, source: str) -> bytes:
    return orjson.dumps({"source": source, "record": rec.model_dump(mode="json")}) + b"\n"


# ---- adapters ---------------------------------------------------------------------------------------


class SubjectStores:
    """Redis, Snowflake (own connection, in a thread) and Kafka for erasure and export."""

    def __init__(self, settings: Settings, redis: aioredis.Redis, producer: AsyncProducer) -> None:
        self.settings = settings
        self.redis = redis
        self.producer = producer
        self.table = f"{settings.snowflake_schema}.MEMORY_RECORDS"
        self.vectors_table = f"{settings.snowflake_schema}.MEMORY_VECTORS"
        self._conn: SnowflakeConnection | None = None

    # hotset
    def _index(self, tenant: str, subject: Subject) -> str:
        if subject.type == "agent_id":
            return keys.by_agent(tenant, subject.id)
        if subject.type == "session_id":
            return keys.by_session(tenant, subject.id)
        return keys.recent(tenant)  # no per-user index: every indexed memory is looked at

    async def hotset_records(self, tenant: str, subject: Subject) -> list[MemoryRecord]:
        ids: list[str] = [
            m.decode() if isinstance(m, bytes) else str(m)
            for m in await self.redis.zrange(self._index(tenant, subject), 0, -1)
        ]
        out: list[MemoryRecord] = []
        for start in range(0, len(ids), MGET_CHUNK):
            chunk = ids[start : start + MGET_CHUNK]
            values = await self.redis.mget([keys.memory(tenant, m) for m in chunk])
            for raw in values:
                rec = _hot_record(raw)
                if rec is not None and holds(rec, subject):
                    out.append(rec)
        return out

    async def tombstoned(self, tenant: str, versions: dict[str, str]) -> int:
        """How many of the memories hold a tombstone at least as new as the given version."""
        done = 0
        items = list(versions.items())
        for start in range(0, len(items), MGET_CHUNK):
            chunk = items[start : start + MGET_CHUNK]
            pipe = self.redis.pipeline(transaction=False)
            for mid, _ in chunk:
                pipe.getrange(keys.memory(tenant, mid), 0, layout._FLAG)
            for (_, version), head in zip(chunk, await pipe.execute(), strict=True):
                text = head.decode() if isinstance(head, bytes) else str(head)
                if len(text) == layout._BODY and text[-1] == "1" and text[:-1] >= version:
                    done += 1
        return done

    # warehouse
    def _execute(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        if self._conn is None or self._conn.is_closed():
            self._conn = snowflake.connector.connect(**connect_kwargs(self.settings), paramstyle="qmark")
        cur = self._conn.cursor()
        try:
            cur.execute(sql, list(params))
            names = [d.name.lower() for d in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        finally:
            cur.close()

    async def warehouse_records(self, tenant: str, subject: Subject) -> list[MemoryRecord]:
        where = f"tenant_id = ? AND {subject.type} = ? AND deleted_at IS NULL"
        sql = f"SELECT {SELECT_RECORDS} FROM {self.table} WHERE {where}"
        rows = await asyncio.to_thread(self._execute, sql, (tenant, subject.id))
        return [row_to_record(r, self.settings.topic_events) for r in rows]

    async def erase_warehouse_vectors(self, tenant: str, subject: Subject) -> int:
        """The vectors of the subject's live rows lose their vector now (run before
        `erase_warehouse`, which forgets whom the rows are about). Version unchanged, as for the
        records: the embedding agent's drop for the worker's delete still lands on the row, and a
        replayed vector of the same version never comes back."""
        live = f"SELECT id FROM {self.table} WHERE tenant_id = ? AND {subject.type} = ? AND deleted_at IS NULL"
        sql = (
            f"UPDATE {self.vectors_table} SET vector = NULL, model = NULL, dims = NULL "
            f"WHERE tenant_id = ? AND vector IS NOT NULL AND id IN ({live})"
        )
        rows = await asyncio.to_thread(self._execute, sql, (tenant, tenant, subject.id))
        first = rows[0] if rows else {}
        return int(next(iter(first.values()), 0) or 0)

    async def erase_warehouse(self, tenant: str, subject: Subject, now: datetime) -> int:
        """Every live row of the subject becomes a tombstone now (version unchanged: the worker's
        delete, a newer version, still lands on it; an older upsert replayed never wins)."""
        ts = now.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
        sql = (
            f"UPDATE {self.table} SET {FORGOTTEN_SET}, deleted_at = TO_TIMESTAMP_NTZ(?), "
            f"updated_at = TO_TIMESTAMP_NTZ(?) WHERE tenant_id = ? AND {subject.type} = ? AND deleted_at IS NULL"
        )
        rows = await asyncio.to_thread(self._execute, sql, (ts, ts, tenant, subject.id))
        first = rows[0] if rows else {}
        return int(next(iter(first.values()), 0) or 0)

    # kafka
    async def publish_deletes(self, events: list[MemoryEvent]) -> int:
        topic = self.settings.topic_events
        messages = [
            (topic, e.tenant_id.encode(), orjson.dumps(e.model_dump(mode="json", exclude_none=True))) for e in events
        ]
        for start in range(0, len(messages), 1000):
            await self.producer.send_many(messages[start : start + 1000])
        return len(messages)

    async def audit(self, entry: AuditEntry) -> None:
        await self.producer.send_many([(self.settings.topic_audit, entry.tenant_id.encode(), entry.to_json())])

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


def _hot_record(raw: bytes | str | None) -> MemoryRecord | None:
    if raw is None:
        return None
    try:
        stored = layout.decode(raw.decode() if isinstance(raw, bytes) else raw)
        if stored is None or stored.deleted or not stored.record_json:
            return None
        return MemoryRecord.from_json(layout.canonical_json(stored.record_json))
    except ValueError:
        return None


# ---- the two operations ------------------------------------------------------------------------------


async def erase(
    stores: SubjectStores,
    tenant: str,
    subject: Subject,
    principal: str,
    wait_s: float = 0.0,
) -> ErasureReport:
    """Erase everything held about `subject` in `tenant`; see the module docstring."""
    started = time.monotonic()
    report = ErasureReport(tenant, subject.type)
    hot, cold = await asyncio.gather(stores.hotset_records(tenant, subject), stores.warehouse_records(tenant, subject))
    report.hotset_found, report.warehouse_found = len(hot), len(cold)
    found = merge_newest(cold, hot)
    report.memories = len(found)
    now = datetime.now(UTC)
    events = [delete_event(rec, now) for rec in found.values()]
    report.deletes_published = await stores.publish_deletes(events)
    report.warehouse_vectors_erased = await stores.erase_warehouse_vectors(tenant, subject)
    report.warehouse_rows_erased = await stores.erase_warehouse(tenant, subject, now)
    if wait_s > 0 and found:
        versions = {rec.memory_id: rec.version for rec in found.values()}
        deadline = time.monotonic() + wait_s
        while True:
            report.hotset_tombstones = await stores.tombstoned(tenant, versions)
            if report.hotset_tombstones >= len(versions) or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.1)
    report.seconds = time.monotonic() - started
    entry = AuditEntry(
        log_id=unique_id(),
        ts=datetime.now(UTC),
        tenant_id=tenant,
        principal=principal[:256],
        action="admin.erasure",
        resource_type=subject.type,
        success=True,
        latency_ms=round(report.seconds * 1000, 3),
        details=report.counts(),
    )
    await stores.audit(entry)
    report.audit_log_id = entry.log_id
    log.info("erasure in %s by %s: %s", tenant, subject.type, report.counts())
    return report


async def export(stores: SubjectStores, tenant: str, subject: Subject) -> list[tuple[MemoryRecord, str]]:
    """Every live memory of the subject with where it came from ("warehouse" or "hotset"):
    warehouse rows overlaid by newer hotset copies, oldest first."""
    cold, hot = await asyncio.gather(stores.warehouse_records(tenant, subject), stores.hotset_records(tenant, subject))
    hot_ids = {r.memory_id: r.version for r in hot}
    newest = merge_newest(cold, hot)
    return [
        (rec, "hotset" if hot_ids.get(rec.memory_id) == rec.version else "warehouse")
        for rec in sorted(newest.values(), key=lambda r: (r.occurred_at, r.memory_id))
    ]


async def export_lines(records: list[tuple[MemoryRecord, str]]) -> AsyncIterator[bytes]:
    """JSON Lines, a chunk of lines at a time."""
    for start in range(0, len(records), 200):
        yield b"".join(export_line(rec, src) for rec, src in records[start : start + 200])


# ---- the CLI (memstream erase / export) -----------------------------------------------------------------


def subject_from_args(user_id: str | None, agent_id: str | None, session_id: str | None) -> Subject:
    given = [(t, v) for t, v in (("user_id", user_id), ("agent_id", agent_id), ("session_id", session_id)) if v]
    if len(given) != 1:
        raise ValueError("give exactly one of --user-id, --agent-id, --session-id")
    kind, value = given[0]
    return Subject(kind, value)  # type: ignore[arg-type]


async def _with_stores(settings: Settings, run: Any) -> Any:
    from app.redis_client import create_redis

    redis = create_redis(settings)
    producer = AsyncProducer(settings)
    stores = SubjectStores(settings, redis, producer)
    try:
        return await run(stores)
    finally:
        stores.close()
        producer.close()
        await redis.aclose()


def run_erase(settings: Settings, tenant: str, subject: Subject, wait_s: float) -> dict[str, Any]:
    async def go(stores: SubjectStores) -> ErasureReport:
        return await erase(stores, tenant, subject, "cli", wait_s)

    report: ErasureReport = asyncio.run(_with_stores(settings, go))
    return report.as_json()


def run_export(settings: Settings, tenant: str, subject: Subject, out: Any) -> int:
    """Writes JSON Lines to `out` (a binary file); returns how many memories."""

    async def go(stores: SubjectStores) -> list[tuple[MemoryRecord, str]]:
        return await export(stores, tenant, subject)

    records: list[tuple[MemoryRecord, str]] = asyncio.run(_with_stores(settings, go))
    for rec, src in records:
        out.write(export_line(rec, src))
    return len(records)

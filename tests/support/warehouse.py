"""Helpers for the warehouse tests: canonical records, table snapshots, reading a topic."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from app.models import DeadLetter, MemoryEvent, MemoryRecord
from app.pipeline import Incoming, prepare
from app.settings import Settings
from app.snowflake_conn import connect
from tests.support.kafka import event


def record(tenant: str, eid: str, offset: int = 0, **over: Any) -> MemoryRecord:
    """The record the ingest agent would publish for this event at this offset."""
    body = event(tenant, eid, **over)
    msg = Incoming(orjson.dumps(body), "memory.events", 0, offset)
    return prepare(MemoryEvent.model_validate(body), msg.position).record


def query(settings: Settings, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[tuple[Any, ...]]:
    conn = connect(settings)
    try:
        return list(conn.cursor().execute(sql, params).fetchall())
    finally:
        conn.close()


def count(settings: Settings, tenants: list[str], table: str = "MEMORY_RECORDS") -> int:
    marks = ", ".join(["%s"] * len(tenants))
    return int(query(settings, f"SELECT COUNT(*) FROM {table} WHERE tenant_id IN ({marks})", tenants)[0][0])


def _digest(value: Any) -> str:
    if value is None:
        return "-"
    data = value if isinstance(value, str) else orjson.dumps(value).decode()
    return hashlib.sha256(orjson.dumps(orjson.loads(data), option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def snapshot(settings: Settings, tenants: list[str]) -> dict[str, Any]:
    """Everything a replay could change: row counts, versions, content hashes, load times."""
    marks = ", ".join(["%s"] * len(tenants))
    rows = query(
        settings,
        "SELECT tenant_id, id, version::STRING, content, metadata, superseded_by, deleted_at IS NOT NULL, "
        f"loaded_at FROM MEMORY_RECORDS WHERE tenant_id IN ({marks}) ORDER BY tenant_id, id",
        tenants,
    )
    audit = query(
        settings,
        "SELECT log_id, ts, action, success, resource_ids, details, loaded_at "
        f"FROM AUDIT_LOGS WHERE tenant_id IN ({marks}) ORDER BY log_id",
        tenants,
    )
    return {
        "records": [(t, i, v, _digest(c), _digest(m), sb, d, str(la)) for t, i, v, c, m, sb, d, la in rows],
        "audit": [(lid, str(ts), a, s, _digest(r), _digest(d), str(la)) for lid, ts, a, s, r, d, la in audit],
    }


def audit_entry(tenant: str, log_id: str, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "log_id": log_id,
        "ts": "2026-03-01T10:00:00Z",
        "tenant_id": tenant,
        "principal": "key:test",
        "action": "memory.store",
        "resource_type": "memory",
        "resource_ids": [f"m-{log_id}"],
        "success": True,
        "status_code": 202,
        "latency_ms": 3.5,
        "request_id": f"req-{log_id}",
        "details": {"route": "/api/v2/memory/store"},
    }
    body.update(over)
    return body


class TopicReader:
    """Reads a topic from the beginning (assigned, no group join); `until` polls until a predicate
    holds. (The broker under-reports log ends, so "read to the end" is not a stop condition.)"""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.consumer = Consumer(
            {
                **settings.kafka_client_config(),
                "group.id": f"test-reader-{time.monotonic_ns()}",
                "enable.auto.commit": False,
            }
        )
        md = self.consumer.list_topics(topic, timeout=10)
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.topics[topic].partitions])
        self.messages: list[bytes] = []

    def until(self, predicate: Callable[[list[bytes]], Any], timeout_s: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for m in self.consumer.consume(500, timeout=0.2):
                if m.error() is None:
                    self.messages.append(m.value() or b"")
            result = predicate(self.messages)
            if result:
                return result
        raise AssertionError(f"condition not met within {timeout_s}s ({len(self.messages)} messages read)")

    def close(self) -> None:
        self.consumer.close()


def dead_letters(messages: list[bytes]) -> list[DeadLetter]:
    return [DeadLetter.model_validate_json(m) for m in messages]


def ntz(dt: datetime) -> datetime:
    from datetime import UTC

    return dt.astimezone(UTC).replace(tzinfo=None)

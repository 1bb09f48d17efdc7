"""MEMORY_RECORDS rows read back as canonical records (pure): the gateway's fallback and
`memstream rebuild` select `SELECT_RECORDS` and map each row with `row_to_record`."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from app.models import VERSION_WIDTH, MemoryRecord, SourcePosition
from sinks.warehouse.tables import MemoryRecordsTable

SELECT_RECORDS = MemoryRecordsTable.select_list()


def _json(value: Any, default: Any) -> Any:
    if value is None:
        return default
    if isinstance(value, str | bytes):
        return orjson.loads(value)
    return value


def _ts(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # TIMESTAMP_NTZ holds UTC


def version_of(value: Any) -> str:
    """A NUMBER(38) version column as the 32-digit version string."""
    return _version(value)


def _version(value: Any) -> str:
    if isinstance(value, int | Decimal):
        return f"{int(value):0{VERSION_WIDTH}d}"
    return str(value).split(".")[0].zfill(VERSION_WIDTH)


def row_to_record(row: dict[str, Any], events_topic: str) -> MemoryRecord:
    """One MEMORY_RECORDS row (lower-case column names, as `SELECT_RECORDS` selects them) as the
    canonical record; `source` names the events topic the record was made from."""
    occurred = _ts(row.get("occurred_at")) or _ts(row.get("created_at")) or datetime.now(UTC)
    partition, offset = row.get("source_partition"), row.get("source_offset")
    source = (
        SourcePosition.trusted(events_topic, int(partition), int(offset))
        if partition is not None and offset is not None
        else None
    )
    importance = row.get("importance")
    ttl = row.get("ttl_seconds")
    return MemoryRecord(
        tenant_id=row["tenant_id"],
        memory_id=row["id"],
        version=_version(row["version"]),
        event_id=row.get("event_id") or "",
        type=row.get("type"),
        key=row.get("key"),
        content=_json(row.get("content"), None),
        metadata=_json(row.get("metadata"), {}) or {},
        agent_id=row.get("agent_id"),
        user_id=row.get("user_id"),
        session_id=row.get("session_id"),
        channel_id=row.get("channel_id"),
        visibility=row.get("visibility") or "private",
        citations=_json(row.get("citations"), []) or [],
        importance=float(importance) if importance is not None else None,
        ttl_seconds=int(ttl) if ttl is not None else None,
        occurred_at=occurred,
        created_at=_ts(row.get("created_at")) or occurred,
        updated_at=_ts(row.get("updated_at")) or occurred,
        deleted_at=(_ts(row.get("deleted_at")) or occurred) if row.get("is_deleted") else None,
        superseded_by=row.get("superseded_by"),
        redactions=_json(row.get("redactions"), {}) or {},
        source=source,
        request_id=row.get("request_id"),
    )

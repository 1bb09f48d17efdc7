"""Kafka values as staging rows, and batches as chunks (pure: the consumer thread runs it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from app.models import SourcePosition
from sinks.warehouse.errors import reason
from sinks.warehouse.tables import TableSpec


@dataclass(slots=True)
class Row:
    """One staged row and where it came from (not frozen: a frozen dataclass costs more to build,
    and one is built per record)."""

    line: bytes  # one JSON object: the staging row
    raw: bytes
    topic: str
    partition: int
    offset: int
    tenant_id: str | None
    timestamp: float | None  # Kafka timestamp of the message (seconds)
    grouped: bool = False  # takes part in supersession (type with a key)

    @property
    def position(self) -> SourcePosition:
        return SourcePosition(topic=self.topic, partition=self.partition, offset=self.offset)


@dataclass(frozen=True)
class Rejected:
    raw: bytes
    position: SourcePosition
    reason: str
    stage: str
    tenant_id: str | None


@dataclass(frozen=True)
class Tombstone:
    """A null value (compaction tombstone): nothing to stage. The delete record published before
    it already made the row a tombstone; its offset is committed with the batch."""

    topic: str
    partition: int
    offset: int


def parse(
    table: TableSpec,
    value: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    timestamp: float | None = None,
) -> Row | Rejected | Tombstone:
    """One Kafka value as a staging row, a tombstone (null value), or rejected with the reason."""
    if value is None:
        return Tombstone(topic, partition, offset)
    raw = value
    try:
        if not raw:
            raise ValueError("empty message")
        staged, tenant, grouped = table.to_row(raw)
        line = orjson.dumps(staged)
    except (ValueError, TypeError) as exc:  # pydantic's ValidationError, orjson's JSONEncodeError
        pos = SourcePosition(topic=topic, partition=partition, offset=offset)
        return Rejected(raw, pos, reason(exc), "warehouse-parse", tenant_of(raw))
    return Row(line, raw, topic, partition, offset, tenant, timestamp, grouped)


def tenant_of(value: bytes | None) -> str | None:
    """The tenant of a value that may not be valid, for the dead letter's key."""
    try:
        raw = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    if isinstance(raw, dict) and isinstance(raw.get("tenant_id"), str):
        return str(raw["tenant_id"])[:64]
    return None


def chunks(rows: Sequence[Row], max_rows: int, max_bytes: int) -> list[list[Row]]:
    """Consecutive chunks of at most `max_rows` rows and `max_bytes` staged bytes (at least one row)."""
    out: list[list[Row]] = []
    cur: list[Row] = []
    size = 0
    for row in rows:
        n = len(row.line) + 1
        if cur and (len(cur) >= max_rows or size + n > max_bytes):
            out.append(cur)
            cur, size = [], 0
        cur.append(row)
        size += n
    if cur:
        out.append(cur)
    return out

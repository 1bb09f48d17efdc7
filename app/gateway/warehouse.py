"""Warehouse (Snowflake) reads for hotset misses. The connector is synchronous: queries run in a
small thread pool, one connection per thread, each bounded by a timeout. A failure opens a short
circuit so a down warehouse costs one timeout, not one per request: callers degrade, never 500."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import snowflake.connector
from snowflake.connector import SnowflakeConnection
from snowflake.connector.errors import Error as SnowflakeError

from app.gateway import gmetrics
from app.gateway.search import SearchParams
from app.gateway.visibility import allowed
from app.models import VERSION_WIDTH, MemoryRecord, SourcePosition
from app.settings import Settings
from app.snowflake_conn import connect_kwargs

log = logging.getLogger(__name__)

COLUMNS = [
    "tenant_id",
    "id",
    "version",
    "event_id",
    "type",
    "key",
    "content",
    "metadata",
    "agent_id",
    "user_id",
    "session_id",
    "channel_id",
    "visibility",
    "citations",
    "importance",
    "ttl_seconds",
    "superseded_by",
    "redactions",
    "occurred_at",
    "created_at",
    "updated_at",
    "deleted_at",
    "source_partition",
    "source_offset",
]
# The emulator returns NULL timestamps as 1970-01-01, so "deleted" is asked for explicitly.
SELECT = ", ".join(COLUMNS) + ", deleted_at IS NOT NULL AS is_deleted"
WAREHOUSE_SEARCH_MAX_ROWS = 200
CIRCUIT_OPEN_S = 3.0
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


class WarehouseUnavailable(RuntimeError):
    pass


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


def _version(value: Any) -> str:
    if isinstance(value, int | Decimal):
        return f"{int(value):0{VERSION_WIDTH}d}"
    return str(value).split(".")[0].zfill(VERSION_WIDTH)


def row_to_record(row: dict[str, Any], events_topic: str) -> MemoryRecord:
    """One MEMORY_RECORDS row (lower-case column names) as the canonical record."""
    occurred = _ts(row.get("occurred_at")) or _ts(row.get("created_at")) or datetime.now(UTC)
    partition, offset = row.get("source_partition"), row.get("source_offset")
    source = (
        SourcePosition(topic=events_topic, partition=int(partition), offset=int(offset))
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
    )


def search_sql(table: str, terms: Sequence[str], p: SearchParams, limit: int) -> tuple[str, list[Any]]:
    """ILIKE per term on the text (and key), tenant scoped, with the search filters."""
    where = ["tenant_id = ?"]
    params: list[Any] = []
    likes = []
    for t in terms:
        likes.append("content:text::string ILIKE ? OR key ILIKE ?")
        params.extend((f"%{t}%", f"%{t}%"))
    where.append("deleted_at IS NULL")
    where.append("(" + " OR ".join(likes) + ")")
    for column, value in (("type", p.type), ("session_id", p.session_id), ("agent_id", p.agent_id)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    vis = sorted(allowed(p.channel_visibility))
    where.append("visibility IN (" + ", ".join(["?"] * len(vis)) + ")")
    params.extend(vis)
    if not p.include_superseded:
        where.append("superseded_by IS NULL")
    conditions = " AND ".join(where)
    sql = f"SELECT {SELECT} FROM {table} WHERE {conditions} ORDER BY occurred_at DESC LIMIT {int(limit)}"
    return sql, params


class Warehouse:
    def __init__(self, settings: Settings, max_workers: int = 4) -> None:
        if not _IDENT.match(settings.snowflake_schema):
            raise ValueError(f"invalid snowflake schema name {settings.snowflake_schema!r}")
        self.settings = settings
        self.table = f"{settings.snowflake_schema}.MEMORY_RECORDS"
        self.timeout_s = float(settings.snowflake_network_timeout_s) + 1.0
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="warehouse")
        self._local = threading.local()
        self._conns: list[SnowflakeConnection] = []
        self._lock = threading.Lock()
        self._open_until = 0.0
        self.last_error: str | None = None

    @property
    def circuit_open(self) -> bool:
        return time.monotonic() < self._open_until

    def _connection(self) -> SnowflakeConnection:
        conn: SnowflakeConnection | None = getattr(self._local, "conn", None)
        if conn is None or conn.is_closed():
            # qmark: values are bound by the server, never spliced into the SQL text.
            conn = snowflake.connector.connect(**connect_kwargs(self.settings), paramstyle="qmark")
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def _execute(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        conn = self._connection()
        try:
            cur = conn.cursor()
            try:
                cur.execute(sql, list(params))
                names = [d.name.lower() for d in cur.description or ()]
                return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
            finally:
                cur.close()
        except BaseException:
            self._local.conn = None  # a broken session is not reused
            with contextlib.suppress(SnowflakeError):
                conn.close()
            raise

    async def query(self, sql: str, params: Sequence[Any], probe: bool = False) -> list[dict[str, Any]]:
        if self.circuit_open and not probe:
            gmetrics.WAREHOUSE_CALLS.labels("skipped").inc()
            raise WarehouseUnavailable(self.last_error or "warehouse unavailable")
        loop = asyncio.get_running_loop()
        try:
            rows = await asyncio.wait_for(loop.run_in_executor(self._pool, self._execute, sql, params), self.timeout_s)
        except (SnowflakeError, OSError, TimeoutError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            self._open_until = time.monotonic() + CIRCUIT_OPEN_S
            gmetrics.WAREHOUSE_CALLS.labels("error").inc()
            log.warning("warehouse query failed: %s", self.last_error)
            raise WarehouseUnavailable(self.last_error) from exc
        self._open_until = 0.0
        gmetrics.WAREHOUSE_CALLS.labels("ok").inc()
        return rows

    async def get(self, tenant: str, memory_id: str) -> MemoryRecord | None:
        """The record, a deleted record (deleted_at set), or None when the warehouse never saw it."""
        rows = await self.query(
            f"SELECT {SELECT} FROM {self.table} WHERE tenant_id = ? AND id = ?", (tenant, memory_id)
        )
        if not rows:
            return None
        return row_to_record(rows[0], self.settings.topic_events)

    async def search(self, tenant: str, p: SearchParams, limit: int) -> list[MemoryRecord]:
        if not p.terms:
            return []
        sql, params = search_sql(self.table, p.terms, p, min(limit, WAREHOUSE_SEARCH_MAX_ROWS))
        rows = await self.query(sql, [tenant, *params])
        return [row_to_record(r, self.settings.topic_events) for r in rows]

    async def ping(self) -> None:
        await self.query("SELECT 1", (), probe=True)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(SnowflakeError):
                conn.close()

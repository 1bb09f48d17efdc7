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
from typing import Any

import snowflake.connector
from snowflake.connector import SnowflakeConnection
from snowflake.connector.errors import Error as SnowflakeError

from app import metrics
from app.auth.scope import HANDOFF
from app.gateway import gmetrics
from app.gateway.search import SearchParams
from app.gateway.visibility import allowed
from app.models import MemoryRecord
from app.settings import Settings
from app.snowflake_conn import connect_kwargs
from sinks.warehouse import SELECT_RECORDS, MemoryRecordsTable, row_to_record
from sinks.warehouse.timing import execute

log = logging.getLogger(__name__)

WAREHOUSE_SEARCH_MAX_ROWS = 200
CIRCUIT_OPEN_S = 3.0
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


class WarehouseUnavailable(RuntimeError):
    pass


LIKE_ESCAPE = "!"


def like_contains(term: str) -> str:
    """An ILIKE pattern matching `term` literally anywhere (with `ESCAPE '!'`): `%`, `_` and `!`
    are escaped; the escape character is not the backslash, so a `\\` is a plain character."""
    escaped = "".join(LIKE_ESCAPE + c if c in "%_" + LIKE_ESCAPE else c for c in term)
    return f"%{escaped}%"


def search_sql(table: str, terms: Sequence[str], p: SearchParams, limit: int) -> tuple[str, list[Any]]:
    """ILIKE per term on the text (and key), tenant scoped, with the search filters."""
    where = ["tenant_id = ?"]
    params: list[Any] = []
    likes = []
    for t in terms:
        likes.append(f"content:text::string ILIKE ? ESCAPE '{LIKE_ESCAPE}' OR key ILIKE ? ESCAPE '{LIKE_ESCAPE}'")
        pattern = like_contains(t)
        params.extend((pattern, pattern))
    where.append("deleted_at IS NULL")
    where.append("(" + " OR ".join(likes) + ")")
    for column, value in (("type", p.type), ("session_id", p.session_id), ("agent_id", p.agent_id)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if p.reader_agent is not None:
        # app.auth.scope.may_read as SQL: its own, unscoped, and handoffs addressed to it.
        where.append("(agent_id IS NULL OR agent_id = ? OR (type = ? AND content:to_agent::string = ?))")
        params.extend((p.reader_agent, HANDOFF, p.reader_agent))
    vis = sorted(allowed(p.channel_visibility))
    where.append("visibility IN (" + ", ".join(["?"] * len(vis)) + ")")
    params.extend(vis)
    if not p.include_superseded:
        where.append("superseded_by IS NULL")
    conditions = " AND ".join(where)
    sql = f"SELECT {SELECT_RECORDS} FROM {table} WHERE {conditions} ORDER BY occurred_at DESC LIMIT {int(limit)}"
    return sql, params


GET_MANY_MAX = 200  # ids bound in one IN list


class Warehouse:
    def __init__(self, settings: Settings, max_workers: int = 4) -> None:
        if not _IDENT.match(settings.snowflake_schema):
            raise ValueError(f"invalid snowflake schema name {settings.snowflake_schema!r}")
        self.settings = settings
        self.table = f"{settings.snowflake_schema}.{MemoryRecordsTable.name}"
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
            metrics.WAREHOUSE_CONNECTIONS.labels("gateway", "open").inc()
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def _execute(self, sql: str, params: Sequence[Any], statement: str = "gateway_query") -> list[dict[str, Any]]:
        conn = self._connection()
        in_use = metrics.WAREHOUSE_CONNECTIONS.labels("gateway", "in_use")
        in_use.inc()
        try:
            cur = conn.cursor()
            try:
                execute(cur, statement, sql, params, slow_s=self.settings.warehouse_slow_query_s)
                names = [d.name.lower() for d in cur.description or ()]
                return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
            finally:
                cur.close()
        except BaseException:
            self._local.conn = None  # a broken session is not reused
            self._close(conn)
            raise
        finally:
            in_use.dec()

    def _close(self, conn: SnowflakeConnection) -> None:
        with self._lock:
            if conn in self._conns:
                self._conns.remove(conn)
                metrics.WAREHOUSE_CONNECTIONS.labels("gateway", "open").dec()
        with contextlib.suppress(SnowflakeError):
            conn.close()

    async def query(
        self, sql: str, params: Sequence[Any], probe: bool = False, statement: str = "gateway_query"
    ) -> list[dict[str, Any]]:
        if self.circuit_open and not probe:
            gmetrics.WAREHOUSE_CALLS.labels("skipped").inc()
            raise WarehouseUnavailable(self.last_error or "warehouse unavailable")
        loop = asyncio.get_running_loop()
        try:
            call = loop.run_in_executor(self._pool, self._execute, sql, params, statement)
            rows = await asyncio.wait_for(call, self.timeout_s)
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
            f"SELECT {SELECT_RECORDS} FROM {self.table} WHERE tenant_id = ? AND id = ?",
            (tenant, memory_id),
            statement="gateway_get",
        )
        if not rows:
            return None
        return row_to_record(rows[0], self.settings.topic_events)

    async def get_many(self, tenant: str, memory_ids: Sequence[str]) -> dict[str, MemoryRecord]:
        """The records of these ids the warehouse holds (deleted ones included), one query per
        GET_MANY_MAX ids."""
        out: dict[str, MemoryRecord] = {}
        ids = list(dict.fromkeys(memory_ids))
        for i in range(0, len(ids), GET_MANY_MAX):
            chunk = ids[i : i + GET_MANY_MAX]
            marks = ", ".join("?" for _ in chunk)
            rows = await self.query(
                f"SELECT {SELECT_RECORDS} FROM {self.table} WHERE tenant_id = ? AND id IN ({marks})", (tenant, *chunk)
            )
            for row in rows:
                rec = row_to_record(row, self.settings.topic_events)
                out[rec.memory_id] = rec
        return out

    async def search(self, tenant: str, p: SearchParams, limit: int) -> list[MemoryRecord]:
        if not p.terms:
            return []
        sql, params = search_sql(self.table, p.terms, p, min(limit, WAREHOUSE_SEARCH_MAX_ROWS))
        rows = await self.query(sql, [tenant, *params], statement="gateway_search")
        return [row_to_record(r, self.settings.topic_events) for r in rows]

    async def uncovered(self, tenant: str, partition: int, offset: int) -> int:
        """How many live, unsuperseded memories of the tenant come from anywhere but events of
        `partition` at `offset` or later (no source counts as anywhere)."""
        rows = await self.query(
            f"SELECT COUNT(*) AS n FROM {self.table} WHERE tenant_id = ? AND deleted_at IS NULL"
            " AND superseded_by IS NULL AND (source_partition IS NULL OR source_offset IS NULL"
            " OR source_partition <> ? OR source_offset < ?)",
            (tenant, partition, offset),
            statement="gateway_coverage",
        )
        return int(rows[0]["n"]) if rows else 0

    async def ping(self) -> None:
        await self.query("SELECT 1", (), probe=True, statement="gateway_ping")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            self._close(conn)

"""The sink's I/O (quixstreams-style add / flush / write): stage a batch, MERGE it by key with a
version guard.

`add` parses one Kafka value into a staging row (`parse`, pure; a value that is not a valid row
is rejected here), `flush` writes what was added in chunks bounded by rows and bytes (or, with
`flush_later`, stages the first chunk now and MERGEs when asked), and `write` is the I/O: `stage`
PUTs one JSON-lines file to a temporary stage and COPYs it into a one-VARIANT temporary table,
`merge` MERGEs from there into the target (the table's SQL, `tables`). Staging a file beats
inlining the rows as bound VALUES on the emulator (docs/warehouse.md), and real Snowflake limits
statement size.

Idempotence: the MERGE dedupes the batch (latest version per key, QUALIFY ROW_NUMBER()) and only
updates a row when the staged version is newer, so replays and redeliveries change nothing.
A write that fails with a data error (`classify`) is bisected until the rows that can never be
written are isolated; they are returned as rejected for the dead-letter topic and everything
else commits. Any other error is raised for the caller to retry: the connection is dropped
first, so the next attempt reconnects.

The connector is blocking: callers run `flush` in a worker thread.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import uuid
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snowflake.connector import SnowflakeConnection
from snowflake.connector.cursor import SnowflakeCursor

from app import metrics
from app.settings import Settings
from sinks.warehouse.errors import classify, reason
from sinks.warehouse.parse import Rejected, Row, Tombstone, chunks, parse
from sinks.warehouse.tables import TableSpec
from sinks.warehouse.timing import execute

log = logging.getLogger(__name__)

STAGE = "MEMSTREAM_SINK_STAGE"


@dataclass
class MergeCounts:
    staged: int = 0
    inserted: int = 0
    updated: int = 0
    superseded: int = 0

    @property
    def unchanged(self) -> int:
        return max(0, self.staged - self.inserted - self.updated)

    def add(self, other: MergeCounts) -> None:
        self.staged += other.staged
        self.inserted += other.inserted
        self.updated += other.updated
        self.superseded += other.superseded


@dataclass
class FlushResult:
    counts: MergeCounts = field(default_factory=MergeCounts)
    rows: int = 0
    chunks: int = 0
    newest_timestamp: float | None = None


class WarehouseSink:
    """One target table, one connection, one writer: call it from a single thread."""

    def __init__(self, settings: Settings, table: TableSpec) -> None:
        self.settings = settings
        self.table = table
        schema = settings.snowflake_schema
        self.target = f"{schema}.{table.name}"
        self.stage_table = f"{table.name}_STAGE"
        self.max_rows = settings.sink_batch_max_rows
        self.max_bytes = settings.sink_batch_max_bytes
        self.pending: list[Row] = []
        self.rejected: list[Rejected] = []
        self._conn: SnowflakeConnection | None = None
        self._staged: tuple[SnowflakeConnection | None, Sequence[Row]] | None = None  # what the stage table holds
        self._tmp = Path(tempfile.mkdtemp(prefix=f"memstream-{table.name.lower()}-"))
        self._slow_s = settings.warehouse_slow_query_s
        self._label = table.name.lower()
        self._merge_sql = table.merge_sql(self.target, self.stage_table)
        self._post_sql = table.post_sql(self.target, self.stage_table)
        # Held while staging (PUT + COPY: the connector's Python, GIL-bound); a caller that
        # parses the next batch in another thread shares it so the two take turns instead of
        # slowing each other down. The MERGE, mostly a wait on the warehouse, runs outside it.
        self.turn: AbstractContextManager[Any] = contextlib.nullcontext()

    # quixstreams-style API -------------------------------------------------------------------

    def add(
        self, value: bytes | None, topic: str, partition: int, offset: int, timestamp: float | None = None
    ) -> Rejected | None:
        """Parse and buffer one message; a value that is not a valid row is rejected at once."""
        item = parse(self.table, value, topic, partition, offset, timestamp)
        if isinstance(item, Tombstone):
            return None  # a null value: nothing to write (see `Tombstone`)
        self.extend([item])
        return item if isinstance(item, Rejected) else None

    def extend(self, items: Iterable[Row | Rejected]) -> None:
        """Buffer rows parsed elsewhere (`parse` is pure, so another thread may do it)."""
        for item in items:
            if isinstance(item, Rejected):
                self.rejected.append(item)
            else:
                self.pending.append(item)

    def flush(self, result: FlushResult | None = None) -> FlushResult:
        """Write everything added, chunk by chunk, counting into `result` as it goes. Raises on a
        retryable error: what was written stays written (idempotent), the rest stays pending."""
        result = result if result is not None else FlushResult()
        for chunk in chunks(self.pending, self.max_rows, self.max_bytes):
            self._done(result, chunk, self._write_isolating(chunk))
        return result

    def flush_later(self, result: FlushResult) -> Callable[[], FlushResult]:
        """`flush` in two steps, for a caller that overlaps the MERGE with other work (another
        sink's): stages the first chunk now and returns the call that MERGEs it and writes the rest.
        That call may be retried: it stages again what a reconnection lost."""
        parts = chunks(self.pending, self.max_rows, self.max_bytes)
        first: list[Row] | None = parts[0] if parts else None
        staged = False
        if first is not None:
            try:
                self.stage(first)
                staged = True
            except Exception as exc:
                if classify(exc) != "data":
                    raise  # a data error is left to the MERGE step, which isolates the rows

        def finish() -> FlushResult:
            nonlocal first
            if first is not None:
                self._done(result, first, self._write_isolating(first, staged=staged))
                first = None
            return self.flush(result)

        return finish

    def write(self, rows: Sequence[Row]) -> MergeCounts:
        """Stage `rows` and MERGE them into the target (one stage, one MERGE, one supersession pass)."""
        if not rows:
            return MergeCounts()
        self.stage(rows)
        return self.merge(rows)

    def stage(self, rows: Sequence[Row]) -> None:
        """Put `rows` in this session's stage table, for `merge`."""
        try:
            cur = self._cursor()
            with self.turn:
                self._run(cur, "truncate", f"TRUNCATE TABLE {self.stage_table}")
                self._stage(cur, rows)
            self._staged = (self._conn, rows)
        except Exception as exc:
            if classify(exc) != "data":
                self.reset()
            raise

    def merge(self, rows: Sequence[Row]) -> MergeCounts:
        """MERGE `rows` from the stage table; staged again first unless this session holds them
        (a reconnection starts a session with an empty one)."""
        try:
            if self._staged is None or self._staged[0] is not self._conn or self._staged[1] is not rows:
                self.stage(rows)
            cur = self._cursor()
            merged = self._run(cur, "merge", self._merge_sql)
            assert merged is not None
            counts = _merge_counts(merged.fetchone(), len(rows))
            if self._post_sql and any(r.grouped for r in rows):
                post = self._run(cur, "supersede", self._post_sql)
                first = post.fetchone() if post is not None else None
                counts.superseded = int(first[0]) if first else 0
            return counts
        except Exception as exc:
            if classify(exc) != "data":
                self.reset()
            raise

    # internals ---------------------------------------------------------------------------------

    def _done(self, result: FlushResult, chunk: list[Row], counts: MergeCounts) -> None:
        """Count a written chunk into `result` and take it off `pending` (it is its head)."""
        result.counts.add(counts)
        result.rows += len(chunk)
        result.chunks += 1
        stamps = [r.timestamp for r in chunk if r.timestamp is not None]
        if stamps:
            newest = max(stamps)
            result.newest_timestamp = max(newest, result.newest_timestamp or newest)
        del self.pending[: len(chunk)]

    def _write_isolating(self, rows: list[Row], *, staged: bool = False) -> MergeCounts:
        """Write (only MERGE, when `rows` are `staged`); on a data error, bisect so only the rows
        that cannot be written are rejected."""
        try:
            return self.merge(rows) if staged else self.write(rows)
        except Exception as exc:
            if classify(exc) != "data":
                raise
            if len(rows) == 1:
                row = rows[0]
                log.warning("warehouse rejected %s: %s", row.position, exc)
                self.rejected.append(Rejected(row.raw, row.position, reason(exc), "warehouse-merge", row.tenant_id))
                return MergeCounts()
            mid = len(rows) // 2
            counts = self._write_isolating(rows[:mid])
            counts.add(self._write_isolating(rows[mid:]))
            return counts

    def _stage(self, cur: SnowflakeCursor, rows: Sequence[Row]) -> None:
        name = f"{self.table.name.lower()}-{uuid.uuid4().hex}.json"
        path = self._tmp / name
        path.write_bytes(b"\n".join(r.line for r in rows))
        try:
            # No compression and no detection: the connector would re-read the MIME tables per file.
            options = "AUTO_COMPRESS = FALSE SOURCE_COMPRESSION = NONE OVERWRITE = TRUE"
            self._run(cur, "put", f"PUT 'file://{path.as_posix()}' @{STAGE} {options}")
        finally:
            path.unlink(missing_ok=True)
        copy = f"COPY INTO {self.stage_table} FROM @{STAGE}/{name} FILE_FORMAT = (TYPE = JSON) PURGE = TRUE"
        self._run(cur, "copy", copy)

    def _run(self, cur: SnowflakeCursor, step: str, sql: str) -> Any:
        return execute(cur, f"{self._label}_{step}", sql, slow_s=self._slow_s)

    def _cursor(self) -> SnowflakeCursor:
        if self._conn is None:
            from app.snowflake_conn import connect

            conn = connect(self.settings)
            try:
                cur = conn.cursor()
                # Session-scoped: another writer's batch can never meet ours.
                cur.execute(f"CREATE TEMPORARY STAGE IF NOT EXISTS {STAGE}")
                cur.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS {self.stage_table} (v VARIANT)")
            except Exception:
                _close_quietly(conn)
                raise
            self._conn = conn
            metrics.WAREHOUSE_CONNECTIONS.labels("sink", "open").inc()
        return self._conn.cursor()

    def reset(self) -> None:
        """Drop the connection: the next write logs in again (after a warehouse restart the old
        session is unknown to it)."""
        conn, self._conn = self._conn, None
        self._staged = None
        if conn is not None:
            metrics.WAREHOUSE_CONNECTIONS.labels("sink", "open").dec()
            _close_quietly(conn)

    def close(self) -> None:
        self.reset()
        for p in self._tmp.glob("*"):
            p.unlink(missing_ok=True)
        self._tmp.rmdir()


def _merge_counts(first: Any, staged: int) -> MergeCounts:
    values = [int(v) for v in (first or ()) if isinstance(v, int | float)]
    inserted = values[0] if values else 0
    updated = values[1] if len(values) > 1 else 0
    return MergeCounts(staged=staged, inserted=inserted, updated=updated)


def _close_quietly(conn: SnowflakeConnection) -> None:
    try:
        conn.close()
    except Exception:
        log.debug("closing the warehouse session failed", exc_info=True)

"""`memstream rebuild`: cold-cache recovery — refill the Redis hotset from the warehouse.

Reads MEMORY_RECORDS (every tenant, or one) page by page in key order (keyset pagination: each
page starts after the last (tenant_id, id) of the previous one), so memory stays constant however
large the table is, and the next page is fetched while the current one is written. Each live
memory whose hotset TTL has not run out goes back into Redis through the same versioned script as
the ingest agent: memory values, recency/type/session/agent/handoff indexes, keyword postings and
active-by-key pointers. A newer version already in Redis always wins, so rebuilding a warm hotset
changes nothing, and the command can run while workers are ingesting. After every page a
checkpoint file records the last key written; an interrupted run resumes there. A complete
rebuild of every tenant sets the hotset's warm marker (readiness reports `degraded` without it). Conversation
turns are indexed with the previous turn of their session found in the same page, as the worker
indexes them (app.pipeline.turn_scope); `--reindex` also rewrites the memories the hotset already
holds at the same version, which brings a hotset written before contextual indexing to the
current index.

Vectors come back without re-embedding: for each page of records, the MEMORY_VECTORS rows of the
same key range (one keyset range query) are read, and a restored memory gets its vector back
through the embedding agent's writer (Lua.VECTORS) when the row's version is the restored
record's and its model and dimension are the configured ones (`vector_ops`). Any other memory
keeps keyword search only until the embedding agent or `memstream reembed` embeds it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import snowflake.connector
from pydantic import ValidationError
from snowflake.connector import SnowflakeConnection

from app.embed import model_name
from app.models import SUPERSEDING_TYPES, MemoryRecord
from app.pipeline import Intent, turn_scope
from app.progress import Progress, ensure_log_output, read_checkpoint, remove_checkpoint, write_checkpoint
from app.redis_client import create_redis
from app.settings import Settings
from app.snowflake_conn import connect_kwargs
from app.text import contextual_terms, index_terms
from sinks.hotset import ActiveEntry, Hotset, VectorOp, VectorWriter, keys, vectors
from sinks.warehouse import SELECT_RECORDS, MemoryRecordsTable, MemoryVectorsTable, row_to_record
from sinks.warehouse.read import version_of
from sinks.warehouse.timing import execute

PAGE_ROWS = 5000
# Memories per script call: one call blocks Redis while it runs, so it stays short (well under
# the client's socket timeout, which would re-send it) and the gateway's reads interleave.
APPLY_OPS = 500
APPLY_IN_FLIGHT = 2
DEFAULT_CHECKPOINT = Path("memstream-rebuild.checkpoint")
log = logging.getLogger("memstream.rebuild")


def restore_intent(
    rec: MemoryRecord, ttl_s: int, now: datetime, previous_text: str = "", reindex: bool = False
) -> Intent | None:
    """What a warehouse row restores (pure): nothing for deleted or expired memories.
    `previous_text`: the previous turn of the session, for a conversation turn."""
    if rec.deleted or rec.content is None:
        return None
    if rec.occurred_at.timestamp() + ttl_s <= now.timestamp():
        return None
    active_field = active_value = None
    if rec.type in SUPERSEDING_TYPES and rec.key and rec.superseded_by is None:
        active_field = keys.active_field(rec.type.value, rec.key)
        active_value = ActiveEntry(rec.version, rec.memory_id).encode()
    text = str(rec.content.get("text", ""))
    terms = tuple(index_terms(f"{rec.key or ''} {text}"))
    context = contextual_terms(terms, previous_text) if turn_scope(rec) is not None else ()
    return Intent(
        "reindex" if reindex else "restore",
        rec,
        {},
        terms=terms + context,
        context_terms=context,
        active_field=active_field,
        active_value=active_value,
    )


def page_sql(table: str, tenant: str | None, after: tuple[str, str] | None, limit: int) -> tuple[str, list[Any]]:
    """The next page in (tenant_id, id) order after `after` (pure)."""
    where: list[str] = []
    params: list[Any] = []
    if tenant is not None:
        where.append("tenant_id = ?")
        params.append(tenant)
    if after is not None:
        where.append("(tenant_id > ? OR (tenant_id = ? AND id > ?))")
        params += [after[0], after[0], after[1]]
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    return f"SELECT {SELECT_RECORDS} FROM {table} {clause}ORDER BY tenant_id, id LIMIT {int(limit)}", params


def vectors_sql(
    table: str, tenant: str | None, after: tuple[str, str] | None, last: tuple[str, str], model: str, dims: int
) -> tuple[str, list[Any]]:
    """The vectors of the configured model in the key range (after, last] of a records page (pure)."""
    where = ["vector IS NOT NULL", "model = ?", "dims = ?", "(tenant_id < ? OR (tenant_id = ? AND id <= ?))"]
    params: list[Any] = [model, dims, last[0], last[0], last[1]]
    if tenant is not None:
        where.append("tenant_id = ?")
        params.append(tenant)
    if after is not None:
        where.append("(tenant_id > ? OR (tenant_id = ? AND id > ?))")
        params += [after[0], after[0], after[1]]
    return f"SELECT tenant_id, id, version, model, dims, vector FROM {table} WHERE {' AND '.join(where)}", params


def vector_ops(
    restored: Iterable[MemoryRecord], rows: Iterable[dict[str, Any]], model: str, dims: int, ttl_of: Any
) -> list[VectorOp]:
    """The hotset vector writes for restored records (pure): a MEMORY_VECTORS row is used only when
    its version is the record's and its model and dimension are the configured ones."""
    by_key = {(str(r["tenant_id"]), str(r["id"])): r for r in rows}
    ops: list[VectorOp] = []
    for rec in restored:
        row = by_key.get((rec.tenant_id, rec.memory_id))
        if row is None or row.get("model") != model or row.get("dims") is None or int(row["dims"]) != dims:
            continue
        if version_of(row["version"]) != rec.version or not isinstance(row.get("vector"), str):
            continue
        try:
            vec = np.frombuffer(base64.b64decode(row["vector"], validate=True), dtype="<f2")
        except (binascii.Error, ValueError):
            continue
        if vec.shape != (dims,):
            continue
        meta = vectors.VectorMeta(
            model=model,
            dim=dims,
            type=rec.type.value if rec.type else None,
            session_id=rec.session_id,
            agent_id=rec.agent_id,
            visibility=rec.visibility,
            occurred_ms=int(rec.occurred_at.timestamp() * 1000),
        )
        value = vectors.encode(rec.version, meta, vec.astype(np.float32))
        ops.append(VectorOp(rec.tenant_id, rec.memory_id, rec.version, value, ttl_of(rec)))
    return ops


class WarehousePages:
    """One warehouse session reading MEMORY_RECORDS a page at a time."""

    def __init__(self, settings: Settings, tenant: str | None, page_rows: int = PAGE_ROWS) -> None:
        self.tenant, self.page_rows = tenant, page_rows
        self.slow_s = settings.warehouse_slow_query_s
        self.table = MemoryRecordsTable.name
        self.conn: SnowflakeConnection = snowflake.connector.connect(**connect_kwargs(settings), paramstyle="qmark")

    def count(self) -> int:
        where, params = ("WHERE tenant_id = ?", [self.tenant]) if self.tenant else ("", [])
        cur = self.conn.cursor()
        cur.execute(f"SELECT COUNT(*) FROM {self.table} {where}", params)
        row = cur.fetchone()
        return int(row[0]) if row else 0

    def page(self, after: tuple[str, str] | None) -> list[dict[str, Any]]:
        sql, params = page_sql(self.table, self.tenant, after, self.page_rows)
        cur = self.conn.cursor()
        execute(cur, "rebuild_page", sql, params, slow_s=self.slow_s)
        names = [d.name.lower() for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def vectors(
        self, after: tuple[str, str] | None, last: tuple[str, str], model: str, dims: int
    ) -> list[dict[str, Any]]:
        sql, params = vectors_sql(MemoryVectorsTable.name, self.tenant, after, last, model, dims)
        cur = self.conn.cursor()
        execute(cur, "rebuild_vectors", sql, params, slow_s=self.slow_s)
        names = [d.name.lower() for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def close(self) -> None:
        self.conn.close()


@dataclass
class RebuildCounts:
    rows: int = 0
    restored: int = 0
    skipped: int = 0
    unreadable: int = 0
    vectors: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "rows": self.rows,
            "restored": self.restored,
            "skipped": self.skipped,
            "unreadable": self.unreadable,
            "vectors": self.vectors,
        }


def with_previous_turns(records: Iterable[MemoryRecord]) -> Iterator[tuple[MemoryRecord, str]]:
    """Each record with the text of the newest earlier live memory of its session ("" when none,
    or when that memory's visibility differs), in the order of (tenant, session, occurred_at,
    memory id)."""
    prev: tuple[str, str] | None = None
    text = visibility = ""
    ordered = sorted(records, key=lambda r: (r.tenant_id, r.session_id or "", r.occurred_at, r.memory_id))
    for rec in ordered:
        scope = (rec.tenant_id, rec.session_id or "")
        if scope != prev:
            prev, text, visibility = scope, "", ""
        yield rec, text if rec.session_id and visibility == rec.visibility else ""
        if not rec.deleted and rec.content is not None:
            text, visibility = str(rec.content.get("text", "")), rec.visibility


def readable(rows: Iterable[dict[str, Any]], topic: str) -> tuple[list[MemoryRecord], list[tuple[str, str]]]:
    """The rows that read as records, and the (tenant, id) of those that do not (written by
    something other than the sink): one broken row must not stop a recovery."""
    records: list[MemoryRecord] = []
    broken: list[tuple[str, str]] = []
    for row in rows:
        try:
            records.append(row_to_record(row, topic))
        except (ValidationError, ValueError, TypeError, KeyError):
            broken.append((str(row.get("tenant_id")), str(row.get("id"))))
    return records, broken


def intents_for(
    records: Iterable[MemoryRecord], hotset: Hotset, now: datetime, reindex: bool = False
) -> list[Intent | None]:
    out: list[Intent | None] = []
    for rec, previous in with_previous_turns(records):
        out.append(restore_intent(rec, hotset.ttl_for(rec.type, rec.ttl_seconds), now, previous, reindex))
    return out


async def apply_overlapped(hotset: Hotset, intents: list[Intent]) -> int:
    """Apply in script calls of APPLY_OPS, APPLY_IN_FLIGHT at a time: while Redis runs one call,
    the next is packed here (restores commute: each is version-guarded, whatever the order)."""
    restored = 0
    inflight: set[asyncio.Future[int]] = set()
    for start in range(0, len(intents), APPLY_OPS):
        if len(inflight) >= APPLY_IN_FLIGHT:
            done, inflight = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
            restored += sum(f.result() for f in done)
        inflight.add(asyncio.ensure_future(hotset.apply(intents[start : start + APPLY_OPS])))
    if inflight:
        restored += sum(await asyncio.gather(*inflight))
    return restored


async def rebuild(
    settings: Settings,
    tenant: str | None = None,
    checkpoint: Path | None = None,
    restart: bool = False,
    progress: bool | None = None,
    page_rows: int = PAGE_ROWS,
    reindex: bool = False,
) -> dict[str, int]:
    """Refill the hotset; returns rows read, memories restored, rows skipped (deleted or past
    their hotset TTL) and rows unreadable (not a memory record) over the whole run, resumed parts
    included."""
    counts, after = RebuildCounts(), None
    state = None if (restart or checkpoint is None) else read_checkpoint(checkpoint)
    if state is not None:
        if state.get("tenant") != tenant:
            raise ValueError(f"checkpoint {checkpoint} is for tenant {state.get('tenant')!r}; pass --restart")
        after = tuple(state["after"]) if state.get("after") else None
        counts = RebuildCounts(**{k: int(v) for k, v in state.get("counts", {}).items()})
        print(f"resuming after {after} from {checkpoint}", file=sys.stderr)
    redis = create_redis(settings)
    # Restores are not changes: they append nothing to the change feed.
    hotset = Hotset(redis, settings.hotset_ttl_seconds, settings.state_ttl_seconds, feed_max_len=0)
    writer = VectorWriter(redis)
    model = model_name(settings)
    pages = await asyncio.to_thread(WarehousePages, settings, tenant, page_rows)
    now = datetime.now(UTC)

    def ttl_of(rec: MemoryRecord) -> int:
        return hotset.ttl_for(rec.type, rec.ttl_seconds)

    try:
        total = await asyncio.to_thread(pages.count)
        with Progress(f"rebuild {tenant or 'all tenants'}", total, "rows", initial=counts.rows, bar=progress) as bar:
            pending = asyncio.ensure_future(asyncio.to_thread(pages.page, after))
            while rows := await pending:
                first, after = after, (str(rows[-1]["tenant_id"]), str(rows[-1]["id"]))
                page_vectors: list[dict[str, Any]] = []
                if model is not None:
                    page_vectors = await asyncio.to_thread(pages.vectors, first, after, model, settings.embed_dim)
                pending = asyncio.ensure_future(asyncio.to_thread(pages.page, after))
                records, broken = readable(rows, settings.topic_events)
                for tenant_id, memory_id in broken:
                    # Names the row, never its content (which may be anything).
                    log.warning("warehouse row %s/%s is not a memory record: not restored", tenant_id, memory_id)
                intents = intents_for(records, hotset, now, reindex)
                live = [i for i in intents if i is not None]
                counts.rows += len(rows)
                counts.unreadable += len(broken)
                counts.skipped += len(records) - len(live)
                counts.restored += await apply_overlapped(hotset, live)
                if page_vectors and model is not None:
                    ops = vector_ops((i.record for i in live), page_vectors, model, settings.embed_dim, ttl_of)
                    for start in range(0, len(ops), APPLY_OPS):
                        counts.vectors += await writer.apply(ops[start : start + APPLY_OPS])
                bar.update(len(rows), restored=counts.restored)
                if checkpoint is not None:
                    write_checkpoint(checkpoint, {"tenant": tenant, "after": list(after), "counts": counts.as_dict()})
        api_keys = await refill_api_keys(settings, redis, tenant)
        if tenant is None:
            await redis.set(keys.WARM_MARKER, datetime.now(UTC).isoformat())
        if checkpoint is not None:
            remove_checkpoint(checkpoint)
    finally:
        await redis.aclose()
        await asyncio.to_thread(pages.close)
    return {**counts.as_dict(), "api_keys": api_keys}


async def refill_api_keys(settings: Settings, redis: Any, tenant: str | None) -> int:
    """Copy API keys and revocations from AI_MEMORY.API_KEYS into Redis (a cached revocation is
    never undone)."""
    from app.auth.apikeys import ApiKeyStore
    from app.auth.registry import KeyRegistry
    from app.gateway.warehouse import Warehouse

    warehouse = Warehouse(settings, max_workers=1)
    try:
        store = ApiKeyStore(redis, registry=KeyRegistry(warehouse.query, settings.snowflake_schema))
        return await store.refill(tenant)
    finally:
        warehouse.close()


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_rebuild(
    settings: Settings,
    tenant: str | None,
    checkpoint: Path | None = DEFAULT_CHECKPOINT,
    restart: bool = False,
    reindex: bool = False,
) -> int:
    ensure_log_output()
    started = time.monotonic()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        counts = asyncio.run(rebuild(settings, tenant, checkpoint, restart, reindex=reindex))
    except KeyboardInterrupt:
        print(f"interrupted: run the same command again to resume ({checkpoint})", file=sys.stderr)
        return 130
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(
        f"read {counts['rows']} warehouse rows; restored {counts['restored']} memories into the hotset, "
        f"{counts['rows'] - counts['restored'] - counts['skipped'] - counts['unreadable']} already current, "
        f"{counts['skipped']} deleted or past their hotset TTL, {counts['unreadable']} unreadable "
        f"(named in the log); {counts['vectors']} vectors restored without re-embedding; "
        f"{counts['api_keys']} API keys "
        f"({time.monotonic() - started:.1f}s)"
    )
    return 0

"""Read orchestration: hotset first, warehouse when the hotset cannot answer. Thin glue between
the adapters (reads.py, warehouse.py) and the pure functions (search.py, context.py)."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from redis.exceptions import RedisError

from app.auth.errors import Forbidden
from app.auth.principal import Principal
from app.auth.scope import may_read, may_write
from app.gateway import gmetrics
from app.gateway.context import Context, assemble
from app.gateway.deps import Services
from app.gateway.docs import ABSENT, Doc, from_record
from app.gateway.errors import ApiError
from app.gateway.search import Scored, SearchParams, passes, rank, reconcile
from app.gateway.warehouse import WarehouseUnavailable
from app.models import Visibility

MAX_FETCH_ROUNDS = 4


async def retrieve(svc: Services, tenant: str, memory_id: str) -> Doc:
    """Hotset, then warehouse (re-warming the hotset). 404 for deleted or unknown memories."""
    slot = await svc.reader.get(tenant, memory_id)
    if slot.deleted:
        svc.reader.count(tenant, hit=True)
        raise ApiError(404, "memory was deleted", "deleted")
    if slot.doc is not None:
        svc.reader.count(tenant, hit=True)
        gmetrics.READS_HOTSET.inc()
        return slot.doc
    svc.reader.count(tenant, hit=False)
    try:
        record = await svc.warehouse.get(tenant, memory_id)
    except WarehouseUnavailable as exc:
        raise ApiError(
            503,
            "not in the hotset and the warehouse is unavailable",
            "warehouse_unavailable",
            details={"reason": str(exc)},
        ) from exc
    if record is None:
        raise ApiError(404, "memory not found")
    if record.deleted:
        raise ApiError(404, "memory was deleted", "deleted")
    gmetrics.READS_WAREHOUSE.inc()
    ttl = svc.settings.hotset_ttl_seconds.get(record.type.value if record.type else "event", 86400)
    record = await svc.reader.rewarm(record, record.ttl_seconds or ttl) or record
    return from_record(record, "warehouse")


async def latest_occurred(svc: Services, tenant: str, memory_id: str) -> datetime | None:
    """The event time of the newest version readable (hotset, else warehouse), or None when
    there is none or neither can say: a delete must order after it to be applied."""
    try:
        slot = await svc.reader.get(tenant, memory_id)
    except RedisError:
        slot = ABSENT
    if slot.doc is not None:
        return slot.doc.occurred_at
    if slot.present:
        return None  # a tombstone: already deleted
    try:
        record = await svc.warehouse.get(tenant, memory_id)
    except WarehouseUnavailable:
        return None
    return record.occurred_at if record is not None else None


@dataclass
class SearchOutcome:
    hits: list[Scored]
    examined: int
    sources: list[Literal["hotset", "warehouse"]]
    warehouse: Literal["used", "not_needed", "unavailable"]


async def search(svc: Services, tenant: str, p: SearchParams, fallback: bool) -> SearchOutcome:
    if not p.terms:
        return SearchOutcome([], 0, [], "not_needed")
    pool = svc.settings.search_candidate_pool
    now_ms = time.time() * 1000
    # Stage 1 orders by matched terms and recency only; BM25's term frequencies and lengths can
    # reorder that, so stage 2 scores several times the limit (recall by multiple: docs/performance.md).
    batch = max(8 * p.limit, 80)
    # Stage 2 fetches at most MAX_FETCH_ROUNDS batches: stage 1 need not rank more than that.
    cands = await svc.reader.search_candidates(tenant, p, pool, now_ms, MAX_FETCH_ROUNDS * batch)
    docs: dict[str, Doc] = {}
    passing = 0
    stale: dict[str, list[str]] = defaultdict(list)
    for round_ in range(MAX_FETCH_ROUNDS):
        ids = cands.ranked[round_ * batch : (round_ + 1) * batch]
        if not ids:
            break
        for mid, slot in zip(ids, await svc.reader.get_many(tenant, ids), strict=True):
            if slot.doc is None:
                for key in cands.sources.get(mid, ()):
                    stale[key].append(mid)
                continue
            docs[mid] = slot.doc
        passing = sum(1 for d in docs.values() if passes(d, p))
        if passing >= 2 * p.limit:
            break
    svc.reader.prune(tenant, stale)
    examined = cands.examined
    sources: list[Literal["hotset", "warehouse"]] = ["hotset"] if docs else []
    warehouse: Literal["used", "not_needed", "unavailable"] = "not_needed"
    if fallback and (p.include_superseded or passing < p.limit):
        # The hotset holds only recent, live memories: older or superseded ones are in the warehouse.
        try:
            records = await svc.warehouse.search(tenant, p, pool)
        except WarehouseUnavailable:
            warehouse = "unavailable"
        else:
            warehouse = "used"
            examined += len(records)
            if records:
                sources.append("warehouse")
            newest = reconcile(records, *await svc.reader.lookup(tenant, records))
            for mid, doc in newest.items():
                docs.pop(mid, None)
                if doc is not None:
                    docs[mid] = doc
    return SearchOutcome(rank(docs.values(), p, cands.df, cands.n_docs, now_ms), examined, sources, warehouse)


async def context(
    svc: Services,
    tenant: str,
    session_id: str | None,
    agent_id: str | None,
    channel_visibility: Visibility | None,
    budget_tokens: int,
    reader_agent: str | None = None,
) -> Context:
    candidates = await svc.reader.context_candidates(tenant, session_id, agent_id)
    return assemble(candidates, budget_tokens, session_id, agent_id, channel_visibility, reader_agent)


def readable(caller: Principal, doc: Doc) -> bool:
    """app.auth.scope.may_read for a fetched memory."""
    return may_read(caller.agent_id, doc.agent_id, doc.type, doc.to_agent)


async def existing(svc: Services, tenant: str, memory_id: str) -> Doc | None:
    """The live memory an id names (hotset, else warehouse), or None (unknown or deleted). 503
    when neither can say: an ownership check must not pass on a guess."""
    slot = await svc.reader.get(tenant, memory_id)
    if slot.doc is not None:
        return slot.doc
    if slot.present:
        return None  # a tombstone
    try:
        record = await svc.warehouse.get(tenant, memory_id)
    except WarehouseUnavailable as exc:
        raise ApiError(
            503,
            "cannot check who owns this memory: the warehouse is unavailable",
            "warehouse_unavailable",
            details={"reason": str(exc)},
        ) from exc
    if record is None or record.deleted:
        return None
    return from_record(record, "warehouse")


async def check_writable(svc: Services, caller: Principal, memory_id: str) -> None:
    """app.auth.scope.may_write: 404 for a memory the caller may not even read, 403 for one it
    may read but not change (an unscoped memory, a handoff addressed to it)."""
    if caller.agent_id is None:
        return
    doc = await existing(svc, caller.tenant_id, memory_id)
    if doc is None or may_write(caller.agent_id, doc.agent_id, exists=True):
        return
    if not readable(caller, doc):
        raise ApiError(404, "memory not found")
    raise Forbidden("this memory belongs to another agent", reason="agent_scope")


def hit_json(s: Scored) -> dict[str, Any]:
    return {
        "memory_id": s.doc.memory_id,
        "score": s.score,
        "relevance": s.relevance,
        "recency": s.recency,
        "importance": s.importance,
        "source": s.doc.source,
        "record": s.doc.record,
    }

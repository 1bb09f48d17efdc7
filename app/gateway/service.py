"""Read orchestration: hotset first, warehouse when the hotset cannot answer. Thin glue between
the adapters (reads.py, warehouse.py) and the pure functions (search.py, context.py)."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from redis.exceptions import RedisError

from app.auth.errors import Forbidden
from app.auth.principal import Principal
from app.auth.scope import may_read, may_write
from app.embed import Embedder
from app.gateway import gmetrics
from app.gateway.context import (
    RECENT_FETCH,
    SECTION_TYPE,
    SECTIONS,
    STANDING,
    SUMMARY_FETCH,
    Context,
    Packing,
    Section,
    StandingKey,
    pack,
    summary_staleness,
)
from app.gateway.deps import Services
from app.gateway.docs import ABSENT, Doc, Slot, from_record
from app.gateway.errors import ApiError
from app.gateway.search import Mode, Scored, SearchParams, fuse, passes, rank, reconcile
from app.gateway.vectors import TenantVectors
from app.gateway.warehouse import WarehouseUnavailable
from app.models import SUPERSEDING_TYPES, MemoryEvent, MemoryType, Visibility
from app.pipeline import future_skew
from sinks.hotset import keys

MAX_FETCH_ROUNDS = 4
# Vector candidates hybrid search reads, per result asked for (at least the minimum); agreement
# with reading all of them and recall: docs/performance.md.
VECTOR_READS_PER_RESULT, VECTOR_READS_MIN = 5, 50


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


def skew_error(svc: Services, event: MemoryEvent) -> ApiError | None:
    """A 422 for an event stamped further ahead of the gateway's clock than the worker accepts
    (it would be dead-lettered, and a `?wait=visible` would time out)."""
    reason = future_skew(event, int(time.time() * 1000), svc.settings.max_event_skew_seconds)
    if reason is None:
        return None
    return ApiError(422, reason, "clock_skew", details={"max_event_skew_seconds": svc.settings.max_event_skew_seconds})


async def write_errors(svc: Services, tenant: str, events: list[MemoryEvent]) -> list[ApiError | None]:
    """The write guards at the gateway: per event, a 422 when it is stamped too far in the future
    (skew_error) or when it is a summary citing a memory of
    the tenant that does not exist or was deleted (a memory written earlier in `events` counts).
    A cited memory found only in the warehouse is re-warmed, so the worker finds it too."""
    summaries = [e for e in events if e.type is MemoryType.SUMMARY and e.op == "upsert" and e.citations]
    if not summaries:
        return [skew_error(svc, e) for e in events]
    cited = list(dict.fromkeys(c for e in summaries for c in e.citations or ()))
    state: dict[str, str] = {}
    try:
        slots = await svc.reader.get_many(tenant, cited)
    except RedisError as exc:
        raise ApiError(503, "the hotset is unavailable", "hotset_unavailable") from exc
    for mid, slot in zip(cited, slots, strict=True):
        if slot.present:
            state[mid] = "deleted" if slot.deleted else "live"
    absent = [mid for mid in cited if mid not in state]
    if absent:
        try:
            records = await svc.warehouse.get_many(tenant, absent)
        except WarehouseUnavailable as exc:
            raise ApiError(
                503,
                "cited memories are not in the hotset and the warehouse is unavailable",
                "warehouse_unavailable",
                details={"reason": str(exc)},
            ) from exc
        for mid, record in records.items():
            if record.deleted:
                state[mid] = "deleted"
                continue
            ttl = svc.settings.hotset_ttl_seconds.get(record.type.value if record.type else "event", 86400)
            await svc.reader.rewarm(record, record.ttl_seconds or ttl)
            state[mid] = "live"
    out: list[ApiError | None] = []
    for event in events:
        problem = skew_error(svc, event)
        if problem is None and event.type is MemoryType.SUMMARY and event.op == "upsert":
            missing = [c for c in event.citations or () if state.get(c) is None]
            deleted = [c for c in event.citations or () if state.get(c) == "deleted"]
            if missing or deleted:
                problem = ApiError(
                    422,
                    "a summary must cite memories of this tenant that exist and are not deleted",
                    "invalid_citations",
                    details={"missing": missing, "deleted": deleted},
                )
        out.append(problem)
        if problem is None and event.op == "upsert":
            state[event.resolved_memory_id()] = "live"
        elif event.op == "delete" and event.memory_id is not None:
            state[event.memory_id] = "deleted"
    return out


@dataclass
class SearchOutcome:
    hits: list[Scored]
    examined: int
    sources: list[Literal["hotset", "warehouse"]]
    warehouse: Literal["used", "not_needed", "unavailable"]
    mode: Mode = "keyword"
    candidates: dict[str, int] = field(default_factory=dict)  # per mode used: candidates examined


@dataclass
class _Keyword:
    docs: dict[str, Doc]
    df: dict[str, int]
    n_docs: int
    examined: int
    sources: list[Literal["hotset", "warehouse"]]
    warehouse: Literal["used", "not_needed", "unavailable"]


async def search(
    svc: Services, tenant: str, p: SearchParams, fallback: bool, mode: Mode | None = None
) -> SearchOutcome:
    """`mode` None: hybrid when the query has terms and the tenant has vectors (and a model is
    configured), else keyword. `examined` stays the keyword candidates when keyword search ran
    (`candidates` has each mode's count). Semantic mode runs no keyword search (nor its warehouse
    fallback): the warehouse holds no vectors to rank by."""
    tv = None
    if mode is None and not p.terms:
        mode = "keyword"  # stopwords only: nothing to search for
    if mode != "keyword" and svc.vectors is not None and svc.embedder is not None:
        tv = await svc.vectors.get(tenant)
    if mode is None:
        mode = "hybrid" if tv is not None and tv.rows else "keyword"
    elif mode != "keyword" and tv is None:
        raise ApiError(
            422, "semantic search is off (MEMSTREAM_EMBED_MODEL=none)", "semantic_unavailable", details={"mode": mode}
        )
    now_ms = time.time() * 1000
    nearest: asyncio.Future[tuple[list[tuple[str, float]], int]] | None = None
    if mode != "keyword":
        assert tv is not None and svc.embedder is not None
        # The query embedding and the product over the tenant's vectors run on a thread (numpy
        # releases the GIL) while the keyword search below waits on Redis and ranks.
        k = min(svc.settings.search_candidate_pool, max(10 * p.limit, 100))
        nearest = asyncio.get_running_loop().run_in_executor(None, _nearest, svc.embedder, tv, p, k)
    try:
        if mode != "semantic" and p.terms:
            # Semantic ranking reads no keyword score: its candidates are the vector search's alone.
            kw = await _keyword(svc, tenant, p, fallback, now_ms)
        else:
            kw = _Keyword({}, {}, 0, 0, [], "not_needed")
    except BaseException:
        if nearest is not None:
            nearest.cancel()  # a thread already running finishes; its answer goes unread
        raise
    if nearest is None:
        hits = rank(kw.docs.values(), p, kw.df, kw.n_docs, now_ms) if p.terms else []
        return SearchOutcome(hits, kw.examined, kw.sources, kw.warehouse, mode, {"keyword": kw.examined})
    near, scanned = await nearest
    cosine = dict(near)
    use_kw = mode == "hybrid"
    # Hybrid reads and ranks the best few vector candidates the keyword search did not read; the
    # others still set the range cosines are normalized over. Reading every one (most hold a query
    # word, so each is tokenized and scored) cost more than the vector search itself.
    reads = max(VECTOR_READS_PER_RESULT * p.limit, VECTOR_READS_MIN) if use_kw else len(near)
    missing = [mid for mid, _ in near[:reads] if mid not in kw.docs]
    unread = [mid for mid, _ in near[reads:] if mid not in kw.docs]
    docs = dict(kw.docs)
    for mid, slot in zip(missing, await svc.reader.get_many(tenant, missing), strict=True):
        if slot.doc is not None:
            docs[mid] = slot.doc
    sources = kw.sources or (["hotset"] if docs else [])
    weight = svc.settings.search_vector_weight
    hits = fuse(docs.values(), p, kw.df, kw.n_docs, now_ms, cosine, weight, keyword=use_kw, unread=unread)
    candidates = {"keyword": kw.examined, "semantic": scanned} if use_kw else {"semantic": scanned}
    examined = kw.examined if use_kw else scanned
    return SearchOutcome(hits, examined, sources, kw.warehouse, mode, candidates)


def _nearest(embedder: Embedder, tv: TenantVectors, p: SearchParams, k: int) -> tuple[list[tuple[str, float]], int]:
    query = embedder.embed([p.text])[0]
    return tv.top(
        query,
        k,
        type=p.type,
        session_id=p.session_id,
        agent_id=p.agent_id,
        channel_visibility=p.channel_visibility,
    )


async def _keyword(svc: Services, tenant: str, p: SearchParams, fallback: bool, now_ms: float) -> _Keyword:
    if not p.terms:
        return _Keyword({}, {}, 0, 0, [], "not_needed")
    pool = svc.settings.search_candidate_pool
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
    if fallback and (p.include_superseded or passing < p.limit) and not await _whole(svc, tenant, p):
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
    return _Keyword(docs, cands.df, cands.n_docs, examined, sources, warehouse)


async def _whole(svc: Services, tenant: str, p: SearchParams) -> bool:
    """The hotset provably holds every memory the search could find (never with superseded ones:
    the warehouse keeps those past the hotset)."""
    return not p.include_superseded and svc.coverage is not None and await svc.coverage.whole(tenant)


CONTEXT_MAX_ROUNDS = 8  # index pages a context call reads at most per index
CITATIONS_CHECKED = 100  # of a summary, for staleness


@dataclass
class ContextOutcome:
    context: Context
    warehouse_consulted: bool


def context_indexes(tenant: str, session_id: str | None, agent_id: str | None) -> dict[Section, list[str]]:
    """The indexes each section reads (app/gateway/context.py defines the scopes)."""
    scopes = [keys.scope(None, None)]
    if agent_id is not None:
        scopes.append(keys.scope(agent_id, None))
    if session_id is not None:
        scopes.append(keys.scope(None, session_id))
    out: dict[Section, list[str]] = {}
    for section in STANDING:
        memory_type = SECTION_TYPE[section]
        assert memory_type is not None
        out[section] = [keys.active_in_scope(tenant, memory_type, s) for s in scopes]
    if session_id is not None:
        out["summary"] = [keys.summaries_in_scope(tenant, keys.scope(None, session_id))]
        out["recent"] = [keys.by_session(tenant, session_id)]
    elif agent_id is not None:
        out["summary"] = [keys.summaries_in_scope(tenant, s) for s in (keys.scope(agent_id, None), scopes[0])]
        out["recent"] = [keys.by_agent(tenant, agent_id)]
    else:
        out["summary"] = [keys.summaries_in_scope(tenant, scopes[0])]
        out["recent"] = [keys.recent(tenant)]
    return out


async def context(
    svc: Services,
    tenant: str,
    session_id: str | None,
    agent_id: str | None,
    channel_visibility: Visibility | None,
    budget_tokens: int,
    reader_agent: str | None = None,
) -> ContextOutcome:
    """Page through the section indexes until every section either fits or fills the budget.

    Standing sections read the per-scope indexes of active memories page by page (never a
    tenant-wide window); an active memory whose hotset copy expired is read from the warehouse
    in one batch and re-warmed. Summary and recent read short recency windows. `reader_agent`
    (an agent-scoped caller's agent) leaves out what app.auth.scope.may_read refuses it.

    Standing sections are packed first (they come first in the budget), so their packing is
    cached per call shape under the tenant's standing generation: while it holds, a call reads
    and packs only summary and recent.
    """
    indexes = context_indexes(tenant, session_id, agent_id)
    page = min(svc.settings.context_page_size, max(budget_tokens, 8))
    first = {"summary": SUMMARY_FETCH, "recent": RECENT_FETCH}
    shape: StandingKey = (tenant, session_id, agent_id, channel_visibility, reader_agent, budget_tokens)
    cached = svc.standing.get(shape)
    offsets: dict[str, int] = {}
    cards: dict[str, int] = {}
    docs: dict[Section, list[Doc | None]] = {s: [] for s in SECTIONS}
    stale_summaries: dict[str, str] = {}
    consulted = False
    # Standing indexes first: the script skips them while the cached packing is current.
    wanted: list[tuple[Section, str, int]] = [
        (section, key, first.get(section, page)) for section, ks in indexes.items() for key in ks
    ]
    n_standing = sum(len(indexes[s]) for s in STANDING)
    generations: set[str] = set()
    standing: Packing | None = None
    complete = True
    for round_no in range(CONTEXT_MAX_ROUNDS):
        generation, replies, slots = await svc.reader.context_pages(
            tenant,
            [(key, offsets.get(key, 0), n) for _, key, n in wanted],
            cached[0] if cached is not None and round_no == 0 else "",
            n_standing if round_no == 0 else 0,
        )
        generations.add(generation)
        if round_no == 0 and cached is not None and cached[0] == generation:
            standing = cached[1]
        fetched: list[tuple[Section, str, list[str]]] = []
        for (section, key, _n), (card, ids) in zip(wanted, replies, strict=True):
            if card < 0:
                continue  # a standing index the cached packing stands for
            cards[key] = card
            offsets[key] = offsets.get(key, 0) + len(ids)
            fetched.append((section, key, ids))
        expired = [mid for section, _, ids in fetched if section in STANDING for mid in ids if not slots[mid].present]
        if expired:
            consulted = True
            slots.update(await _from_warehouse(svc, tenant, expired))
            # One the warehouse could not give back is missing from this answer only: not cached.
            complete = complete and all(slots[mid].present for mid in expired)
        stale: dict[str, list[str]] = defaultdict(list)
        for section, key, ids in fetched:
            docs[section].extend(slots[mid].doc for mid in ids)
            for mid in ids:
                slot = slots[mid]
                # Active indexes keep an expired memory (it comes back from the warehouse).
                if slot.deleted or (section not in STANDING and not slot.present):
                    stale[key].append(mid)
        svc.reader.prune(tenant, stale)
        summaries = [slots[mid].doc for sec, _, ids in fetched if sec == "summary" for mid in ids]
        stale_summaries.update(await _stale_summaries(svc, tenant, [d for d in summaries if d is not None]))
        if standing is not None:
            break  # summary and recent are read in one round
        totals = {s: sum(cards.get(k, 0) for k in indexes[s]) for s in STANDING}
        args = (session_id, agent_id, channel_visibility, totals, stale_summaries, reader_agent)
        packed = pack(docs, budget_tokens, *args, sections=STANDING)
        wanted = [
            (section, key, page)
            for section in packed.starved
            for key in indexes[section]
            if offsets.get(key, 0) < cards.get(key, 0)
        ]
        if not wanted:
            standing = packed
            if complete and len(generations) == 1:  # no standing change between the rounds
                svc.standing.put(shape, generation, packed)
            break
    if standing is None:  # the rounds ran out while standing sections still had room
        standing = pack(docs, budget_tokens, *args, sections=STANDING)
    ctx = pack(
        docs,
        budget_tokens,
        session_id,
        agent_id,
        channel_visibility,
        stale=stale_summaries,
        reader_agent=reader_agent,
        sections=("summary", "recent"),
        start=standing.copy(),
    ).context()
    return ContextOutcome(ctx, consulted)


async def _from_warehouse(svc: Services, tenant: str, ids: list[str]) -> dict[str, Slot]:
    """Active memories whose hotset copy expired, by id from the warehouse, re-warmed."""
    try:
        records = await svc.warehouse.get_many(tenant, ids)
    except WarehouseUnavailable:
        return {}
    out: dict[str, Slot] = {}
    for mid, record in records.items():
        if record.deleted:
            continue
        ttl = svc.settings.hotset_ttl_seconds.get(record.type.value if record.type else "event", 86400)
        record = await svc.reader.rewarm(record, record.ttl_seconds or ttl) or record
        out[mid] = Slot(record.version, from_record(record), False)
    return out


async def _stale_summaries(svc: Services, tenant: str, summaries: list[Doc]) -> dict[str, str]:
    """Summary id -> why it is stale, for those whose citations were deleted or superseded."""
    cited = {s.memory_id: list((s.record.get("citations") or [])[:CITATIONS_CHECKED]) for s in summaries}
    unique = list(dict.fromkeys(mid for ids in cited.values() for mid in ids))
    if not unique:
        return {}
    slots = dict(zip(unique, await svc.reader.get_many(tenant, unique), strict=True))
    out = {}
    for summary in summaries:
        reason = summary_staleness(summary, slots)
        if reason is not None:
            out[summary.memory_id] = reason
    return out


async def staleness(svc: Services, doc: Doc) -> str | None:
    """Why a summary is stale (retrieve), or None; other types are never stale."""
    if doc.type != "summary":
        return None
    tenant = str(doc.record.get("tenant_id") or "")
    return (await _stale_summaries(svc, tenant, [doc])).get(doc.memory_id)


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


async def check_supersedes(svc: Services, caller: Principal, event: MemoryEvent) -> None:
    """Superseding is rewriting: an agent-scoped caller may not replace the memory active for a
    (type, key) unless it may rewrite that memory (app.auth.scope.may_write: its own agent's):
    403 `agent_scope` otherwise, naming nothing of the memory that is active (the hotset's
    pointer decides)."""
    if caller.agent_id is None or event.op != "upsert" or event.type not in SUPERSEDING_TYPES or not event.key:
        return
    try:
        active = await svc.reader.active(caller.tenant_id, keys.active_field(event.type.value, event.key))
    except RedisError as exc:
        raise ApiError(503, "the hotset is unavailable", "hotset_unavailable") from exc
    if active is None:
        return
    if active.memory_id == event.resolved_memory_id():
        return  # a new version of the active memory itself: check_writable's case
    doc = await existing(svc, caller.tenant_id, active.memory_id)
    if doc is None or may_write(caller.agent_id, doc.agent_id, exists=True):
        return
    if not readable(caller, doc):
        # Another agent's memory it may not read: its key is taken, without saying by what.
        raise Forbidden("another agent's memory is active for this key", reason="agent_scope")
    raise Forbidden("the memory active for this key belongs to another agent", reason="agent_scope")


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

"""Redis hotset reads for the gateway (the hotset's keys, layout and scripts: sinks/hotset/).

Each memory is one string, read many at a time with MGET. Index members can be stale: the
memory's string expired (per-type TTL) or was deleted. Reads skip them and remove them from the
index they came from in the background, so indexes shrink back to what the hotset holds.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from app.gateway.docs import ABSENT, Slot, from_hotset
from app.gateway.search import RECENCY_HALF_LIFE_S, SearchParams
from app.models import SUPERSEDING_TYPES, VERSION_WIDTH, MemoryRecord
from sinks.hotset import ActiveEntry, Lua, keys, layout, script

log = logging.getLogger(__name__)

HIT, MISS = "gateway:hotset_hits", "gateway:hotset_misses"
SEARCH_FETCH_MAX = 200  # ids stage 1 hands to stage 2 (fetched in rounds, best first)
CACHED_VALUE_MAX = 4096  # larger values (long chunks) are parsed on every read: the cache stays small


@dataclass
class Candidates:
    ranked: list[str]  # memory ids, best prescore first
    df: dict[str, int]
    n_docs: int
    examined: int
    sources: dict[str, tuple[str, ...]]  # memory id -> index keys it was read from (for pruning)


class HotsetReader:
    def __init__(self, redis: aioredis.Redis, doc_cache_size: int = 20_000) -> None:
        self.redis = redis
        # A value fully determines its Slot (a new version, marker or tombstone is a new value),
        # so parsed values are memoized by the value itself: agents re-read the same memories
        # every turn, and parsing them is most of a context call's work.
        self._cached = functools.lru_cache(maxsize=doc_cache_size)(_slot) if doc_cache_size else _slot
        self._rewarm = script(redis, Lua.REWARM)
        self._search = script(redis, Lua.SEARCH_CANDIDATES)
        self._context_pages = script(redis, Lua.CONTEXT_PAGES)
        self._prune = script(redis, Lua.PRUNE)
        # Hit/miss counters are kept in process and flushed to the tenant's stats hash in batches,
        # so the retrieve fast path stays a single Redis round trip.
        self._counts: Counter[tuple[str, str]] = Counter()
        self._background: set[asyncio.Task[None]] = set()

    # ---- single records ----------------------------------------------------------------------
    async def get(self, tenant: str, memory_id: str) -> Slot:
        value = await self.redis.get(keys.memory(tenant, memory_id))
        return self._slot(memory_id, value) if value else ABSENT

    def _slot(self, memory_id: str, value: str) -> Slot:
        return self._cached(memory_id, value) if len(value) <= CACHED_VALUE_MAX else _slot(memory_id, value)

    async def get_many(self, tenant: str, ids: Sequence[str]) -> list[Slot]:
        """One MGET, however many ids (they share the tenant's hash slot)."""
        if not ids:
            return []
        prefix = keys.memory(tenant, "")
        values = await self.redis.mget([prefix + mid for mid in ids])
        cached = self._cached
        return [
            (cached(mid, v) if len(v) <= CACHED_VALUE_MAX else _slot(mid, v)) if v else ABSENT
            for mid, v in zip(ids, values, strict=True)
        ]

    async def lookup(self, tenant: str, records: Sequence[MemoryRecord]) -> tuple[list[Slot], list[ActiveEntry | None]]:
        """For warehouse records, in one round trip: the hotset's slot of each memory id and the
        memory active for its (type, key), if any (see search.reconcile)."""
        if not records:
            return [], []
        fields = [_active_field(r) for r in records]
        wanted = sorted({f for f in fields if f})
        pipe = self.redis.pipeline(transaction=False)
        pipe.mget([keys.memory(tenant, r.memory_id) for r in records])
        if wanted:
            pipe.hmget(keys.active(tenant), wanted)
        replies = await pipe.execute()
        values: list[str | None] = replies[0]
        active_of = {
            f: ActiveEntry.decode(raw) for f, raw in zip(wanted, replies[1] if wanted else [], strict=True) if raw
        }
        slots = [self._slot(r.memory_id, v) if v else ABSENT for r, v in zip(records, values, strict=True)]
        return slots, [active_of.get(f) if f else None for f in fields]

    async def active(self, tenant: str, field: str) -> ActiveEntry | None:
        """The memory active for a (type, key) field (keys.active_field), if any."""
        raw: str | None = await self.redis.hget(keys.active(tenant), field)  # type: ignore[misc]
        return ActiveEntry.decode(raw) if raw else None

    async def progress(self, writes: Sequence[tuple[str, str, str]]) -> list[tuple[str | None, bool]]:
        """For (tenant, memory id, event id) each: (stored version, event processed?), for
        read-your-writes polling, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for tenant, memory_id, event_id in writes:
            pipe.getrange(keys.memory(tenant, memory_id), 0, VERSION_WIDTH - 1)
            pipe.exists(keys.seen(tenant, event_id))
        replies = await pipe.execute()
        return [(v or None, bool(seen)) for v, seen in zip(replies[::2], replies[1::2], strict=True)]

    async def rewarm(self, record: MemoryRecord, ttl_s: int) -> MemoryRecord | None:
        """Write a warehouse record back into the hotset unless the hotset holds this version or a
        newer one (then None). Returns the record as the hotset now holds it: superseded when a
        newer memory is active for its key, although the warehouse did not know yet."""
        stored_sb = await self._rewarm(
            keys=[keys.memory(record.tenant_id, record.memory_id), keys.active(record.tenant_id)],
            args=[
                record.version,
                record.to_json(),
                record.superseded_by or "",
                ttl_s,
                _active_field(record),
                record.memory_id,
            ],
        )
        if stored_sb is None:
            return None
        if (stored_sb or None) != record.superseded_by:
            return record.model_copy(update={"superseded_by": stored_sb or None})
        return record

    def count(self, tenant: str, hit: bool) -> None:
        self._counts[(tenant, HIT if hit else MISS)] += 1

    def pending_counts(self, tenant: str) -> dict[str, int]:
        return {f: n for (t, f), n in self._counts.items() if t == tenant}

    async def flush_counts(self) -> None:
        if not self._counts:
            return
        counts, self._counts = self._counts, Counter()
        pipe = self.redis.pipeline(transaction=False)
        for (tenant, field), n in counts.items():
            pipe.hincrby(keys.stats(tenant), field, n)
        try:
            await pipe.execute()
        except RedisError:
            self._counts.update(counts)  # keep them for the next flush
            raise

    # ---- search ------------------------------------------------------------------------------
    async def search_candidates(
        self, tenant: str, p: SearchParams, pool: int, now_ms: float, top: int = SEARCH_FETCH_MAX
    ) -> Candidates:
        """Stage 1 in one Lua call (Lua.SEARCH_CANDIDATES): document frequencies, the candidate pool
        from the smallest of postings and filter indexes, and the best ids by prescore."""
        term_keys = [keys.term(tenant, t) for t in p.terms]
        filter_keys = _filter_keys(tenant, p)
        raw = await self._search(
            keys=[keys.recent(tenant), *term_keys, *filter_keys],
            args=[len(term_keys), pool, int(now_ms), RECENCY_HALF_LIFE_S * 1000, min(top, SEARCH_FETCH_MAX)],
        )
        n_docs, examined = int(raw[0]), int(raw[1])
        df = {t: int(c) for t, c in zip(p.terms, raw[2 : 2 + len(term_keys)], strict=True)}
        ranked = [str(m) for m in raw[2 + len(term_keys) :: 2]]
        sources = dict.fromkeys(ranked, (*term_keys, *filter_keys))  # one tuple for every candidate
        return Candidates(ranked, df, n_docs, examined, sources)

    # ---- context -----------------------------------------------------------------------------
    async def context_pages(
        self, tenant: str, pages: Sequence[tuple[str, int, int]], generation: str = "", standing: int = 0
    ) -> tuple[str, list[tuple[int, list[str]]], dict[str, Slot]]:
        """For (index key, start, count) each, newest first: (entries in the index, the ids), and
        the slot of every id read, in one script call (Lua.CONTEXT_PAGES). The first `standing`
        pages are skipped, as (-1, []), when `generation` is the tenant's standing generation;
        returns that generation first."""
        if not pages:
            return generation, [], {}
        args: list[str | int] = [keys.memory(tenant, ""), generation, standing]
        args += [x for _, s, n in pages for x in (s, n)]
        current, raw = await self._context_pages(
            keys=[keys.standing_generation(tenant), *(k for k, _, _ in pages)], args=args
        )
        out: list[tuple[int, list[str]]] = []
        slots: dict[str, Slot] = {}
        cached = self._cached
        for card, ids, values in raw:
            out.append((int(card), ids))
            for mid, v in zip(ids, values, strict=True):
                if v:
                    slots[mid] = cached(mid, v) if len(v) <= CACHED_VALUE_MAX else _slot(mid, v)
                elif mid not in slots:
                    slots[mid] = ABSENT
        return str(current), out, slots

    # ---- handoffs ----------------------------------------------------------------------------
    async def handoff_ids(self, tenant: str, agent_id: str, n: int) -> list[str]:
        return list(await self.redis.zrevrange(keys.handoffs_to(tenant, agent_id), 0, n - 1))

    async def page_after(self, key: str, before: tuple[int, str] | None, n: int) -> list[tuple[str, int]]:
        """Up to `n` (id, score) of a recency index, newest first, strictly after the cursor
        `before` = (score, id) in that order (at one score, ids come in reverse order)."""
        if before is None:
            raw = await self.redis.zrevrange(key, 0, n - 1, withscores=True)
            return [(str(m), int(s)) for m, s in raw]
        score, last = before
        out: list[tuple[str, int]] = []
        offset = 0
        while len(out) < n:
            raw = await self.redis.zrevrangebyscore(key, score, "-inf", start=offset, num=n + 64, withscores=True)
            if not raw:
                break
            offset += len(raw)
            out.extend((str(m), int(s)) for m, s in raw if int(s) < score or str(m) < last)
        return out[:n]

    async def acked(self, tenant: str, ids: Sequence[str]) -> list[bool]:
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for mid in ids:
            pipe.exists(keys.handoff_ack(tenant, mid))
        return [bool(x) for x in await pipe.execute()]

    # ---- maintenance -------------------------------------------------------------------------
    def prune(self, tenant: str, stale: dict[str, list[str]]) -> None:
        """Remove stale members from indexes, off the request path, each only if its memory is
        still absent or deleted (Lua.PRUNE). Best effort: a later read prunes again."""
        stale = {k: v for k, v in stale.items() if v}
        if not stale:
            return

        async def run() -> None:
            try:
                await self._prune(keys=list(stale), args=[keys.memory(tenant, ""), orjson.dumps(list(stale.values()))])
            except RedisError as exc:
                log.debug("index prune failed: %s", exc)

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


def _active_field(record: MemoryRecord) -> str:
    """The active-pointer field that may supersede this record, or '' (the warehouse's
    superseded_by lags the hotset's by a flush)."""
    if record.type is not None and record.type in SUPERSEDING_TYPES and record.key:
        return keys.active_field(record.type.value, record.key)
    return ""


def _slot(memory_id: str, value: str) -> Slot:
    try:
        stored = layout.decode(value)
    except ValueError:
        log.warning("hotset value of %s is not in the hotset layout: read as absent", memory_id)
        return ABSENT
    if stored is None:
        return ABSENT
    return Slot(stored.version, from_hotset(memory_id, stored, value), stored.deleted)


def _filter_keys(tenant: str, p: SearchParams) -> list[str]:
    out = []
    if p.type is not None:
        out.append(keys.by_type(tenant, p.type))
    if p.session_id is not None:
        out.append(keys.by_session(tenant, p.session_id))
    if p.agent_id is not None:
        out.append(keys.by_agent(tenant, p.agent_id))
    return out

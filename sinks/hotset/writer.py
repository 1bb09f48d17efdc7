"""Redis hotset adapter: reads the state `plan` needs and applies intents, one script call per
tenant per batch (argument packing, not Redis, is the cost per command: ops travel as one JSON)."""

from __future__ import annotations

import functools
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import redis.asyncio as aioredis

from app.models import MemoryRecord, MemoryType
from sinks.hotset import keys, layout
from sinks.hotset.scripts import Lua, script
from sinks.hotset.state import CITED_STATE, ActiveEntry, DedupeEntry, HotsetState, TurnNeighbours

if TYPE_CHECKING:  # app.pipeline imports the state entries from this package
    from app.pipeline import Intent, Prepared

# "replay" writes nothing; "restore" (memstream rebuild) writes like "write" without the event ledger;
# "reindex" (memstream rebuild --reindex) restores and also rewrites a memory's same version
# A refused event is remembered like a dropped one: a replay does not dead-letter it twice.
_KIND = {"write": "w", "delete": "x", "duplicate": "d", "dropped": "p", "restore": "r", "reindex": "i", "refused": "p"}


def summary_scopes(rec: MemoryRecord) -> list[str]:
    """The scopes a summary is found under: its session's and its agent's, else the tenant's."""
    out = []
    if rec.session_id:
        out.append(keys.scope(None, rec.session_id))
    if rec.agent_id:
        out.append(keys.scope(rec.agent_id, None))
    return out or [keys.scope(None, None)]


def _closed(rec: MemoryRecord) -> bool:
    """A done task stays the active version of its key but is no longer context."""
    return rec.type is MemoryType.TASK and bool(rec.content) and (rec.content or {}).get("status") == "done"


@dataclass(frozen=True, slots=True)
class _TenantKeys:
    """A tenant's key names and prefixes that every op names: built once per tenant, not per op."""

    recent: str
    by_type: dict[str, str]
    session: str  # prefixes: + the session id, agent id, term, memory id...
    agent: str
    term: str
    memory: str
    seen: str
    dedupe: str
    key_history: str
    active: str
    active_index: str


@functools.lru_cache(maxsize=4096)
def _tenant_keys(t: str) -> _TenantKeys:
    return _TenantKeys(
        recent=keys.recent(t),
        by_type={m.value: keys.by_type(t, m.value) for m in MemoryType},
        session=keys.by_session(t, ""),
        agent=keys.by_agent(t, ""),
        term=keys.term(t, ""),
        memory=keys.memory(t, ""),
        seen=keys.seen(t, ""),
        dedupe=keys.dedupe(t, ""),
        key_history=keys.key_history(t, ""),
        active=keys.active(t),
        active_index=keys.active_index_of(t),
    )


@dataclass(frozen=True)
class ApplyCall:
    """One tenant's Lua.APPLY call: its stats key and its arguments."""

    stats_key: str
    args: list[bytes | str | int]


class Hotset:
    def __init__(self, redis: aioredis.Redis, ttls: dict[str, int], state_ttl_s: int, feed_max_len: int = 10_000):
        self.redis = redis
        self.ttls = ttls
        # Ledger, dedupe and tombstone keys outlive the dedupe window (which is event time) so
        # that a replay within this horizon decides exactly as the first pass did.
        self.state_ttl_s = state_ttl_s
        # Each tenant's change feed (keys.feed) keeps about this many entries; 0 writes none.
        self.feed_max_len = feed_max_len
        self._apply = script(redis, Lua.APPLY)
        self._state = script(redis, Lua.STATE)

    async def read_state(self, batch: list[Prepared]) -> HotsetState:
        """One script call per tenant for every dedupe digest, active pointer and event id."""
        by_tenant: dict[str, list[Prepared]] = defaultdict(list)
        for p in batch:
            by_tenant[p.record.tenant_id].append(p)
        state = HotsetState()
        if not by_tenant:
            return state
        pipe = self.redis.pipeline(transaction=False)
        queries = []
        for tenant, items in by_tenant.items():
            digests = sorted({p.dedupe_digest for p in items if p.dedupe_digest})
            fields = sorted({p.active_field for p in items if p.active_field})
            events = sorted({p.record.event_id for p in items})
            cited = sorted({c for p in items if p.record.type is MemoryType.SUMMARY for c in p.record.citations})
            forgets = sorted({p.record.memory_id for p in items if p.event.op == "delete"})
            first: dict[str, int] = {}  # session -> its earliest turn in the batch (ms)
            for p in items:
                if p.turn_of is not None and p.record.session_id:
                    ms = int(p.record.occurred_at.timestamp() * 1000)
                    first[p.record.session_id] = min(ms, first.get(p.record.session_id, ms))
            sessions = sorted(first)
            queries.append((tenant, digests, fields, events, cited, forgets, sessions))
            query = {
                "dd": [keys.dedupe(tenant, d) for d in digests],
                "act": keys.active(tenant),
                "af": fields,
                "seen": [keys.seen(tenant, e) for e in events],
                "cit": [keys.memory(tenant, c) for c in cited],
                "mem": [keys.memory(tenant, m) for m in forgets],
                "prev": [[keys.by_session(tenant, s), str(first[s])] for s in sessions],
                "mp": keys.memory(tenant, ""),
                "sp": keys.by_session(tenant, ""),
            }
            await self._state(keys=[keys.stats(tenant)], args=[orjson.dumps(query)], client=pipe)
        for (tenant, digests, fields, events, cited, forgets, sessions), raw in zip(
            queries, await pipe.execute(), strict=True
        ):
            res = orjson.loads(raw)
            for d, v in zip(digests, res["dd"] or [], strict=False):
                if v:
                    state.dedupe[(tenant, d)] = DedupeEntry.decode(v)
            for f, v in zip(fields, res["af"] or [], strict=False):
                if v:
                    state.active[(tenant, f)] = ActiveEntry.decode(v)
            state.seen.update((tenant, e) for e, hit in zip(events, res["seen"] or [], strict=False) if hit)
            for c, flag in zip(cited, res.get("cit") or [], strict=False):
                state.memories[(tenant, c)] = CITED_STATE[int(flag)]
            for m, v, near in zip(forgets, res.get("mem") or [], res.get("around") or [], strict=False):
                rec = _live_record(v) if v else None
                if rec is None:
                    continue
                state.stored[(tenant, m)] = rec
                state.stored_context[(tenant, m)] = layout.context_of(v)
                if near:
                    following = _live_record(near[0]) if near[0] else None
                    text, visibility = layout.stored_text(near[1]) if near[1] else ("", "")
                    state.neighbours[(tenant, m)] = TurnNeighbours(
                        following, layout.context_of(near[0]) if following else (), text, visibility
                    )
            for s, v in zip(sessions, res.get("prev") or [], strict=False):
                text, visibility = layout.stored_text(v) if v else ("", "")
                if text:
                    state.previous_turn[(tenant, s)] = (text, visibility)
        return state

    def ttl_for(self, memory_type: MemoryType | None, override: int | None) -> int:
        if override:
            return override
        return self.ttls.get(memory_type.value if memory_type else "event", self.state_ttl_s)

    def _op(self, intent: Intent) -> dict[str, Any]:
        t = intent.record.tenant_id
        tk = _tenant_keys(t)
        # A delete names the keys of what it forgets: the Lua removes the memory from them.
        rec = intent.forgets if intent.kind == "delete" and intent.forgets is not None else intent.record
        index_keys: list[str] = []
        leave_keys: list[str] = []
        if intent.kind in ("write", "restore", "reindex") or rec is intent.forgets:
            index_keys.append(tk.recent)
            if rec.type is not None:
                index_keys.append(tk.by_type[rec.type.value])
            if rec.session_id:
                index_keys.append(tk.session + rec.session_id)
            if rec.agent_id:
                index_keys.append(tk.agent + rec.agent_id)
            if rec.type is MemoryType.HANDOFF and rec.content and rec.content.get("to_agent"):
                to_agent = str(rec.content["to_agent"])
                index_keys.append(keys.handoffs_to(t, to_agent))
                # The inbox: a packet leaves it with its acknowledged (done) version.
                if rec.content.get("status") == "done":
                    leave_keys.append(keys.handoffs_pending(t, to_agent))
                else:
                    index_keys.append(keys.handoffs_pending(t, to_agent))
            if rec.type is MemoryType.SUMMARY:
                index_keys.extend(keys.summaries_in_scope(t, s) for s in summary_scopes(rec))
            postings = tk.term
            index_keys.extend([postings + term for term in intent.terms])
        if intent.drop_terms:
            leave_keys.extend(tk.term + term for term in intent.drop_terms)
        in_scope = ""
        if intent.active_field and rec.type is not None and not _closed(rec):
            in_scope = keys.active_in_scope(t, rec.type.value, keys.scope(rec.agent_id, rec.session_id))
        rec = intent.record
        return {
            "k": _KIND[intent.kind],
            "m": tk.memory + rec.memory_id,
            "v": rec.version,
            "j": layout.with_context(intent.record_json.decode(), intent.context_terms) if intent.stores else "",
            "ttl": self.ttl_for(rec.type, rec.ttl_seconds),
            "st": self.state_ttl_s,
            "s": int(rec.occurred_at.timestamp() * 1000),
            "l": tk.seen + rec.event_id,
            "a": tk.active,
            "af": intent.active_field or "",
            "av": intent.active_value or "",
            "mp": tk.memory,
            "ai": in_scope,
            "ax": tk.active_index,
            "kh": tk.key_history + intent.active_field if intent.active_field else "",
            "khp": tk.key_history,
            "dk": tk.dedupe + intent.dedupe_digest
            if intent.dedupe_digest and (intent.dedupe_value or intent.kind == "delete")
            else "",
            "dv": intent.dedupe_value or "",
            "id": rec.memory_id,
            "sb": rec.superseded_by or "",
            "t": rec.type.value if rec.type else "",
            "ix": index_keys,
            "rx": leave_keys,
            "c": intent.counters,
            # The scope the change feed filters on (a delete's is read from the stored record).
            "vis": rec.visibility,
            "ses": rec.session_id or "",
            "ag": rec.agent_id or "",
            "ta": str(rec.content.get("to_agent") or "") if rec.type is MemoryType.HANDOFF and rec.content else "",
            **(
                {"vk": keys.vector(t, rec.memory_id), "vx": keys.vector_index(t), "vm": keys.vector_meta(t)}
                if intent.kind == "delete"
                else {}
            ),
        }

    async def apply(self, intents: list[Intent]) -> int:
        """Apply intents in order (per tenant); returns how many changed state."""
        return await self.run(self.calls(intents))

    def calls(self, intents: list[Intent]) -> list[ApplyCall]:
        """The script calls that apply `intents`, one per tenant (no I/O: the ingest agent builds
        them while the broker acknowledges the batch's records)."""
        by_tenant: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for intent in intents:
            if intent.kind != "replay":
                by_tenant[intent.record.tenant_id].append(self._op(intent))
        if not by_tenant:
            return []
        covers = coverage(intents, lambda r: self.ttl_for(r.type, r.ttl_seconds), int(time.time() * 1000))
        return [
            ApplyCall(
                keys.stats(tenant),
                [
                    orjson.dumps(ops),
                    keys.feed(tenant) if self.feed_max_len else "",
                    self.feed_max_len,
                    keys.standing_generation(tenant),
                    keys.coverage(tenant),
                    covers.get(tenant, ""),
                ],
            )
            for tenant, ops in by_tenant.items()
        ]

    async def run(self, calls: list[ApplyCall]) -> int:
        """Send `calls` in one pipeline; returns how many ops changed state."""
        if not calls:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for call in calls:
            await self._apply(keys=[call.stats_key], args=call.args, client=pipe)
        results: list[Any] = await pipe.execute()
        return sum(int(r) for r in results)

    async def count_dead_letters(self, tenants: list[str | None]) -> None:
        """Service-wide and, for letters whose tenant is known, in the tenant's own stats."""
        if not tenants:
            return
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(keys.GLOBAL_STATS, "deadletters", len(tenants))
        for tenant, n in Counter(t for t in tenants if t).items():
            pipe.hincrby(keys.stats(tenant), "deadletters", n)
        await pipe.execute()


NO_TTL = 2**31  # a call that stores nothing: no shorter TTL to record


def coverage(intents: list[Intent], ttl_of: Callable[[MemoryRecord], int], now_ms: int) -> dict[str, str]:
    """Per tenant, what a call of events tells the hotset about its coverage (Lua.APPLY,
    ARGV[6]): '<partition>:<lowest offset>:<shortest TTL stored>:<now ms>'. Only events of the
    events topic count (a rebuild's restores do not: they do not make the hotset complete)."""
    out: dict[str, tuple[int, int, int]] = {}
    for i in intents:
        src = i.record.source
        if i.kind not in ("write", "delete", "duplicate", "dropped", "refused") or src is None:
            continue
        t = i.record.tenant_id
        ttl = ttl_of(i.record) if i.kind == "write" else NO_TTL
        part, off, low = out.get(t, (src.partition, src.offset, ttl))
        if src.partition == part:
            off = min(off, src.offset)
        out[t] = (part, off, min(low, ttl))
    return {t: f"{p}:{o}:{ttl}:{now_ms}" for t, (p, o, ttl) in out.items()}


def _live_record(value: str) -> MemoryRecord | None:
    """The record a hotset value holds, or None for a tombstone or a value in another layout."""
    try:
        stored = layout.decode(value)
        if stored is None or stored.deleted or not stored.record_json:
            return None
        return MemoryRecord.from_json(layout.canonical_json(stored.record_json))
    except ValueError:  # not this layout, or a record that no longer validates: nothing to forget
        return None


@dataclass(frozen=True, slots=True)
class VectorOp:
    """Write (`value` set) or drop (`value` None) the vector of one memory version."""

    tenant: str
    memory_id: str
    version: str
    value: bytes | None
    ttl_s: int
    replace: bool = False  # re-embedding (another model): replaces the same version's vector


class VectorWriter:
    """The embedding agent's adapter: one Lua.VECTORS call per tenant per batch."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._apply = script(redis, Lua.VECTORS)

    async def apply(self, ops: list[VectorOp]) -> int:
        by_tenant: dict[str, list[str | bytes | int]] = defaultdict(list)
        for op in ops:
            t = op.tenant
            by_tenant[t] += [
                ("r" if op.replace else "w") if op.value is not None else "x",
                keys.memory(t, op.memory_id),
                keys.vector(t, op.memory_id),
                op.memory_id,
                op.version,
                op.value or b"",
                op.ttl_s,
            ]
        if not by_tenant:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for tenant, args in by_tenant.items():
            await self._apply(keys=[keys.vector_meta(tenant), keys.vector_index(tenant)], args=args, client=pipe)
        return sum(int(r) for r in await pipe.execute())

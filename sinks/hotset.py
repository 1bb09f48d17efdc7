"""Redis hotset adapter: reads the state `plan` needs and applies intents in one pipeline."""

from __future__ import annotations

from importlib import resources
from typing import Any

import redis.asyncio as aioredis

from app import keys
from app.models import MemoryType
from app.pipeline import ActiveEntry, DedupeEntry, HotsetState, Intent, Prepared

_KIND = {"write": "w", "delete": "x", "duplicate": "d", "dropped": "p"}  # "replay" writes nothing


class Hotset:
    def __init__(self, redis: aioredis.Redis, ttls: dict[str, int], state_ttl_s: int):
        self.redis = redis
        self.ttls = ttls
        # Ledger, dedupe and tombstone keys outlive the dedupe window (which is event time) so
        # that a replay within this horizon decides exactly as the first pass did.
        self.state_ttl_s = state_ttl_s
        source = resources.files("sinks").joinpath("hotset_apply.lua").read_text(encoding="utf-8")
        self._apply = redis.register_script(source)

    async def read_state(self, batch: list[Prepared]) -> HotsetState:
        """One round trip for every dedupe digest and active pointer the batch touches."""
        dd = sorted({(p.record.tenant_id, p.dedupe_digest) for p in batch if p.dedupe_digest})
        act = sorted({(p.record.tenant_id, p.active_field) for p in batch if p.active_field})
        evs = sorted({(p.record.tenant_id, p.record.event_id) for p in batch})
        state = HotsetState()
        if not evs:
            return state
        pipe = self.redis.pipeline(transaction=False)
        for tenant, digest in dd:
            pipe.get(keys.dedupe(tenant, digest))
        for tenant, fld in act:
            pipe.hget(keys.active(tenant), fld)
        for tenant, event_id in evs:
            pipe.exists(keys.seen(tenant, event_id))
        values = await pipe.execute()
        n_dd, n_act = len(dd), len(act)
        state.seen = {ev for ev, hit in zip(evs, values[n_dd + n_act :], strict=True) if hit}
        for (tenant, digest), raw in zip(dd, values[: len(dd)], strict=True):
            if raw:
                state.dedupe[(tenant, digest)] = DedupeEntry.decode(raw)
        for (tenant, fld), raw in zip(act, values[n_dd : n_dd + n_act], strict=True):
            if raw:
                state.active[(tenant, fld)] = ActiveEntry.decode(raw)
        return state

    def ttl_for(self, memory_type: MemoryType | None, override: int | None) -> int:
        if override:
            return override
        return self.ttls.get(memory_type.value if memory_type else "event", self.state_ttl_s)

    def _call(self, intent: Intent) -> tuple[list[str], list[Any]]:
        rec = intent.record
        t = rec.tenant_id
        mem = keys.memory(t, rec.memory_id)
        index_keys: list[str] = []
        if intent.kind == "write":
            index_keys.append(keys.recent(t))
            if rec.type is not None:
                index_keys.append(keys.by_type(t, rec.type.value))
            if rec.session_id:
                index_keys.append(keys.by_session(t, rec.session_id))
            if rec.agent_id:
                index_keys.append(keys.by_agent(t, rec.agent_id))
            if rec.type is MemoryType.HANDOFF and rec.content and rec.content.get("to_agent"):
                index_keys.append(keys.handoffs_to(t, str(rec.content["to_agent"])))
            index_keys.extend(keys.term(t, term) for term in intent.terms)
        call_keys = [
            mem,
            keys.seen(t, rec.event_id),
            keys.stats(t),
            keys.active(t),
            keys.dedupe(t, intent.dedupe_digest) if intent.dedupe_digest else mem,
            keys.memory(t, intent.supersedes) if intent.supersedes else mem,
            *index_keys,
        ]
        counters: list[Any] = []
        for name, inc in intent.counters.items():
            counters.extend((name, inc))
        args: list[Any] = [
            _KIND[intent.kind],
            rec.version,
            rec.to_json() if intent.publishes else "",
            self.ttl_for(rec.type, rec.ttl_seconds),
            self.state_ttl_s,
            int(rec.occurred_at.timestamp() * 1000),
            intent.active_field or "",
            intent.active_value or "",
            intent.dedupe_value or "",
            self.state_ttl_s,
            rec.memory_id,
            rec.superseded_by or "",
            rec.type.value if rec.type else "",
            len(intent.counters),
            *counters,
        ]
        return call_keys, args

    async def apply(self, intents: list[Intent]) -> int:
        """Apply intents in order in one pipeline; returns how many changed a memory."""
        intents = [i for i in intents if i.kind != "replay"]
        if not intents:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for intent in intents:
            call_keys, args = self._call(intent)
            await self._apply(keys=call_keys, args=args, client=pipe)
        results = await pipe.execute()
        return sum(int(r) for r in results)

    async def count_dead_letters(self, n: int) -> None:
        if n:
            await self.redis.hincrby(keys.GLOBAL_STATS, "deadletters", n)

"""A11 Cold Cache Recovery: the tenant's hotset is lost; readiness says `degraded` and why, reads
fall back to the warehouse, and `memstream rebuild` — killed half-way and resumed — restores
every index, after which reads come from the hotset again and match what they were.

Runs after A1 to A10 (module order) and leaves the hotset rebuilt for those that follow."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import redis

from app.models import derive_memory_id
from sinks.hotset import keys
from tests.support.scenarios import COMMON_WORD, SEED_TYPES, Agent, Seeded, cli, warehouse_count
from tests.support.stack import ROOT, wait_until


def indexes(rds: redis.Redis, tenant: str) -> dict[str, set[str]]:
    """The members of the indexes a rebuild must restore."""
    names = {"all": keys.recent(tenant)}
    for t in SEED_TYPES:
        names[f"type:{t}"] = keys.by_type(tenant, t)
    for n in (0, 7, 199):
        names[f"session:{n}"] = keys.by_session(tenant, f"seed-s{n:03d}")
    for n in (0, 39):
        names[f"agent:{n}"] = keys.by_agent(tenant, f"seed-a{n:02d}")
    for word in (COMMON_WORD, "billing", "latency"):
        names[f"term:{word}"] = keys.term(tenant, word)
    out = {name: set(rds.zrange(key, 0, -1)) for name, key in names.items()}  # type: ignore[arg-type]
    out["active"] = set(rds.hvals(keys.active(tenant)))  # type: ignore[arg-type]
    return out


def live_in_warehouse(seeded: Seeded, ids: set[str]) -> int:
    if not ids:
        return 0
    marks = ", ".join(["%s"] * len(ids))
    return warehouse_count(seeded.settings, seeded.tenant, f"AND deleted_at IS NULL AND id IN ({marks})", sorted(ids))


def wipe(rds: redis.Redis, tenant: str) -> None:
    """What FLUSHALL does to this tenant (credentials aside, which the rebuild does not own)."""
    spare = {keys.api_keys_of(tenant)}
    pipe = rds.pipeline(transaction=False)
    for key in rds.scan_iter(match=f"ms:{{{tenant}}}:*", count=5000):
        if key not in spare:
            pipe.unlink(key)
    pipe.delete(keys.WARM_MARKER)
    pipe.execute()


async def reads(agent: Agent, decision: str) -> dict[str, Any]:
    ctx = await agent.ok("/api/v2/context", session_id="seed-s007", agent_id="seed-a07", budget_tokens=3000)
    found = await agent.ok("/api/v2/memory/search", q=f"{COMMON_WORD} latency", type="decision", limit=20)
    got = await agent.ok("/api/v2/memory/retrieve", memory_id=decision)
    return {
        "context": [i["memory_id"] for i in ctx["items"]],
        "search": [h["memory_id"] for h in found["results"]],
        "search_sources": found["sources"],
        "retrieve": (got["record"]["version"], got["source"]),
    }


async def test_rebuild_restores_a_lost_hotset(seeded: Seeded, agent: Agent, rds: redis.Redis, tmp_path: Path) -> None:
    tenant = seeded.tenant
    decision = derive_memory_id(tenant, "seed-decision-4999")
    warm = await reads(agent, decision)
    assert warm["retrieve"][1] == "hotset" and warm["context"] and warm["search"]
    before = indexes(rds, tenant)
    assert len(before["all"]) >= seeded.memories  # the tenant is big

    wipe(rds, tenant)
    ready = (await agent.client.get("/ready")).json()
    assert ready["status"] == "degraded" and "memstream rebuild" in ready["reason"]
    cold = await agent.ok("/api/v2/memory/retrieve", memory_id=decision)
    assert cold["source"] == "warehouse" and cold["record"]["version"] == warm["retrieve"][0]

    checkpoint = tmp_path / "rebuild.checkpoint"
    first = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "rebuild", "--checkpoint", str(checkpoint)],
        env={**os.environ, **seeded.stack.env},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(checkpoint.exists, timeout_s=180, interval_s=0.1)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    after = orjson.loads(checkpoint.read_bytes())["after"]
    assert after, "killed after a page"

    second = cli(seeded.stack, "rebuild", "--checkpoint", str(checkpoint))
    assert second.returncode == 0, second.stderr
    assert f"resuming after ('{after[0]}', '{after[1]}')" in second.stderr
    assert "restored" in second.stdout and not checkpoint.exists()
    assert "rebuild all tenants: " in second.stderr  # progress lines without a terminal

    after = indexes(rds, tenant)
    # Every index is back; only entries of deleted memories (pruned lazily by reads) are gone.
    # Keyword postings a turn borrowed from its session's previous turn (contextual indexing) are
    # rebuilt only as far as the warehouse's pages hold each previous turn: term indexes are held to
    # being back (non-empty), the other indexes to every member and nothing new.
    lost = set().union(*(before[n] - after[n] for n in before if n != "active" and not n.startswith("term:")))
    assert all(after[n] <= before[n] for n in before if not n.startswith("term:")) and len(lost) < 10, lost
    assert all(after[n] for n in before if n.startswith("term:"))
    assert live_in_warehouse(seeded, lost) == 0, lost
    assert after["active"] == before["active"]
    ready = (await agent.client.get("/ready")).json()
    assert ready["status"] == "ok" and ready["reason"] is None
    rebuilt = await reads(agent, decision)
    assert rebuilt["retrieve"] == warm["retrieve"]
    assert rebuilt["context"] == warm["context"] and rebuilt["search"] == warm["search"]
    assert rebuilt["search_sources"] == ["hotset"]

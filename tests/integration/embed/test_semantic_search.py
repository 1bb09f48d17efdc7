"""The embedding agent and search by meaning on the real stack (shared worker with its default
agents, which include the embedding agent; gateway in-process)."""

from __future__ import annotations

import itertools
import json
import os
from typing import Any

import chitchat_dataset
import redis

from app.text import normalize
from sinks.hotset import keys, vectors
from tests.support.gateway import Gateway, eid
from tests.support.kafka import event, publish
from tests.support.stack import wait_until

TARGET = "My dog is a golden retriever named Biscuit"
QUERY = "what kind of puppy do I have"
PUBLIC = {"id": "c-public", "visibility": "public"}
PRIVATE = {"id": "c-dm", "visibility": "private"}


def chitchat(n: int) -> list[str]:
    path = os.path.join(os.path.dirname(chitchat_dataset.__file__), "dataset.json")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    texts = [m["text"] for conv in itertools.islice(data.values(), 600) for turn in conv["messages"] for m in turn]
    unique = {normalize(t): t for t in texts if t.strip()}  # duplicates would be deduplicated
    return list(unique.values())[:n]


def seed(gw: Gateway, rds: redis.Redis, tenant: str, extra: list[dict[str, Any]]) -> None:
    """2,000 real chat messages plus `extra`, all embedded."""
    events = [
        event(tenant, eid(), content={"text": t}, channel=PUBLIC, occurred_at=f"2026-11-0{1 + i % 9}T10:00:00Z")
        for i, t in enumerate(chitchat(2000))
    ]
    events += [event(tenant, eid(), occurred_at="2026-11-05T10:00:00Z", **e) for e in extra]
    publish(gw.settings, events)
    wait_until(lambda: rds.zcard(keys.vector_index(tenant)) >= len(events), timeout_s=120, interval_s=0.2)


async def search(gw: Gateway, tenant: str, **params: Any) -> dict[str, Any]:
    r = await gw.get(tenant, "/api/v2/memory/search", params=params)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def texts(out: dict[str, Any]) -> list[str]:
    return [h["record"]["content"]["text"] for h in out["results"]]


async def test_semantic_search_finds_a_paraphrase_keyword_search_misses(
    gateway: Gateway, rds: redis.Redis, tenant: str
) -> None:
    # A session of its own: contextual indexing would otherwise lend it the words of whichever
    # chat message precedes it in the shared session, and keyword search could find it by them.
    seed(gateway, rds, tenant, [{"content": {"text": TARGET}, "channel": PUBLIC, "session_id": "s-target"}])
    keyword = await search(gateway, tenant, q=QUERY, mode="keyword")
    assert TARGET not in texts(keyword)
    semantic = await search(gateway, tenant, q=QUERY, mode="semantic")
    assert TARGET in texts(semantic)
    assert semantic["mode"] == "semantic" and semantic["candidates"]["semantic"] >= 2001
    assert set(semantic["candidates"]) == {"semantic"} and semantic["warehouse"] == "not_needed"  # no keyword search
    hybrid = await search(gateway, tenant, q=QUERY, limit=50)  # the default when the tenant has vectors
    assert hybrid["mode"] == "hybrid"
    assert set(hybrid["candidates"]) == {"keyword", "semantic"}
    assert TARGET in texts(hybrid)  # fused with the keyword hits on "kind" and "do", it stays in
    # A stored vector records its model and dimension.
    [mid] = [h["memory_id"] for h in semantic["results"] if h["record"]["content"]["text"] == TARGET]
    raw = redis.Redis(port=rds.connection_pool.connection_kwargs["port"]).get(keys.vector(tenant, mid))
    assert raw is not None
    _, meta, vec = vectors.decode(raw)
    assert (meta.model, meta.dim, vec.shape) == ("wordllama-l2-64", 64, (64,))


async def test_filters_hold_and_a_deleted_memory_loses_its_vector(
    gateway: Gateway, rds: redis.Redis, tenant: str
) -> None:
    private = "My dog is a golden retriever named Secret Biscuit"
    seed(
        gateway,
        rds,
        tenant,
        [
            {"content": {"text": private}, "channel": PRIVATE, "session_id": "s-private"},
            {"content": {"text": TARGET}, "channel": PUBLIC, "session_id": "s-public"},
        ],
    )
    for mode in ("semantic", "hybrid"):
        public = await search(gateway, tenant, q=QUERY, mode=mode, channel_visibility="public", limit=50)
        assert private not in texts(public)
        assert all(h["record"]["visibility"] == "public" for h in public["results"])
        assert TARGET in texts(public)
        own = await search(gateway, tenant, q=QUERY, mode=mode, session_id="s-private")
        assert texts(own) == [private]
    out = await search(gateway, tenant, q=QUERY, mode="semantic")
    [mid] = [h["memory_id"] for h in out["results"] if h["record"]["content"]["text"] == TARGET]
    r = await gateway.delete(tenant, f"/api/v2/memory/{mid}")
    assert r.status_code in (200, 202), r.text
    wait_until(lambda: not rds.exists(keys.vector(tenant, mid)), timeout_s=30)
    assert rds.zscore(keys.vector_index(tenant), mid) is None
    after = await search(gateway, tenant, q=QUERY, mode="semantic")
    assert TARGET not in texts(after)


async def test_keyword_mode_is_the_default_without_vectors(gateway: Gateway, tenant: str) -> None:
    out = await search(gateway, tenant, q="nothing stored here")
    assert out["mode"] == "keyword" and out["results"] == []
    bad = await gateway.get(tenant, "/api/v2/memory/search", params={"q": "x", "mode": "vector"})
    assert bad.status_code == 422 and "error" in bad.json()


async def test_reembed_moves_a_tenant_to_another_model_while_search_answers(
    gateway: Gateway, rds: redis.Redis, tenant: str
) -> None:
    from app.reembed import reembed
    from tests.support.gateway import running

    seed(gateway, rds, tenant, [{"content": {"text": TARGET}, "channel": PUBLIC}])
    other = gateway.settings.model_copy(update={"embed_dim": 128})
    async with running(other) as gw128:
        before = await search(gw128, tenant, q=QUERY)  # no vector of its model yet: keyword still answers
        assert before["candidates"].get("semantic", 0) == 0 and before["mode"] in ("hybrid", "keyword")
        counts = await reembed(other, tenant)
        assert counts["embedded"] == counts["memories"] >= 2001
        after = await search(gw128, tenant, q=QUERY, mode="semantic")
        assert TARGET in texts(after) and after["candidates"]["semantic"] >= 2001
    binary = redis.Redis(port=rds.connection_pool.connection_kwargs["port"])
    [mid] = [h["memory_id"] for h in after["results"] if h["record"]["content"]["text"] == TARGET]
    _, meta, _ = vectors.decode(binary.get(keys.vector(tenant, mid)) or b"")
    assert (meta.model, meta.dim) == ("wordllama-l2-128", 128)
    # The warehouse holds the re-embedded vector too (what `memstream rebuild` restores).
    from tests.support.warehouse import query

    sql = "SELECT model, dims FROM MEMORY_VECTORS WHERE tenant_id = %s AND id = %s"
    got = query(gateway.settings, sql, (tenant, mid))
    assert [tuple(r) for r in got] == [("wordllama-l2-128", 128)]
    assert counts["warehouse"] == counts["memories"]

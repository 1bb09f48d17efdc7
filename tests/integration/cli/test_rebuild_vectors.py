"""`memstream rebuild` restores vectors from the warehouse without re-embedding: memories are
written and embedded by a worker of their own, their vectors reach MEMORY_VECTORS, the worker
stops (no embedding agent runs from then on), the tenant's hotset is wiped, and after the rebuild
search by meaning answers from the restored vectors."""

from __future__ import annotations

import itertools
import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import chitchat_dataset
import redis

from app.models import derive_memory_id
from app.rebuild import rebuild
from app.settings import Settings
from app.text import normalize
from sinks.hotset import keys, vectors
from tests.support.gateway import running
from tests.support.kafka import event, publish
from tests.support.stack import Proc, Stack, isolated_topics, wait_until
from tests.support.warehouse import query

TARGET = "My dog is a golden retriever named Biscuit"
QUERY = "what kind of puppy do I have"
N_CHAT = 400


def chitchat(n: int) -> list[str]:
    path = os.path.join(os.path.dirname(chitchat_dataset.__file__), "dataset.json")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    texts = [m["text"] for conv in itertools.islice(data.values(), 200) for turn in conv["messages"] for m in turn]
    unique = {normalize(t): t for t in texts if t.strip()}
    return list(unique.values())[:n]


def warehouse_vectors(settings: Settings, tenant: str) -> int:
    sql = "SELECT COUNT(*) FROM MEMORY_VECTORS WHERE tenant_id = %s AND vector IS NOT NULL"
    return int(query(settings, sql, (tenant,))[0][0])


def wipe(rds: redis.Redis, tenant: str) -> None:
    for key in rds.scan_iter(match=f"ms:{{{tenant}}}:*", count=1000):
        rds.delete(key)


async def semantic(settings: Settings, tenant: str) -> dict[str, Any]:
    async with running(settings) as gw:  # a fresh gateway: no tenant matrix cached from before
        r = await gw.get(tenant, "/api/v2/memory/search", params={"q": QUERY, "mode": "semantic", "limit": 20})
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out


async def test_rebuild_restores_vectors_and_search_by_meaning_answers(
    stack: Stack, rds: redis.Redis, tenant: str
) -> None:
    env, settings = isolated_topics(stack, "rv")
    worker = Proc(["worker"], env, stack.tmp / "worker-rebuild-vectors.log").start()
    now = datetime.now(UTC)
    texts = [*chitchat(N_CHAT), TARGET]
    stamp = [(now - timedelta(seconds=len(texts) - i)).isoformat() for i in range(len(texts))]
    events = [
        event(tenant, f"e{i}", content={"text": t}, session_id=f"s{i % 7}", occurred_at=stamp[i])
        for i, t in enumerate(texts)
    ]
    try:
        publish(settings, events)
        wait_until(lambda: warehouse_vectors(settings, tenant) == len(texts), timeout_s=180, interval_s=0.5)
    finally:
        worker.stop()  # from here on nothing embeds
    target = derive_memory_id(tenant, f"e{len(texts) - 1}")
    binary = redis.Redis(port=stack.redis.port)
    original = binary.get(keys.vector(tenant, target))
    assert original is not None

    wipe(rds, tenant)
    out = await semantic(settings, tenant)
    assert out["results"] == [] and out["candidates"].get("semantic", 0) == 0

    # Another configured model restores no vector (they would be compared with other queries).
    other = await rebuild(settings.model_copy(update={"embed_dim": 128}), tenant, checkpoint=None, progress=False)
    assert other["restored"] == len(texts) and other["vectors"] == 0
    assert rds.zcard(keys.vector_index(tenant)) == 0

    wipe(rds, tenant)
    counts = await rebuild(settings, tenant, checkpoint=None, progress=False, page_rows=150)  # several pages
    assert counts["restored"] == len(texts) and counts["vectors"] == len(texts)
    assert rds.zcard(keys.vector_index(tenant)) == len(texts)
    restored = binary.get(keys.vector(tenant, target))
    assert restored is not None
    v0, meta0, vec0 = vectors.decode(original)
    v1, meta1, vec1 = vectors.decode(restored)
    assert (v1, meta1) == (v0, meta0) and (vec1 == vec0).all()  # the same vector, not a new embedding

    out = await semantic(settings, tenant)
    assert out["mode"] == "semantic" and out["candidates"]["semantic"] >= len(texts)
    assert TARGET in [h["record"]["content"]["text"] for h in out["results"]]

    again = await rebuild(settings, tenant, checkpoint=None, progress=False)
    assert again["restored"] == 0 and again["vectors"] == 0  # a warm hotset is left as it is

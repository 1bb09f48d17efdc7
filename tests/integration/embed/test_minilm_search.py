"""The optional MiniLM model end to end: a worker with MEMSTREAM_EMBED_MODEL=minilm embeds what it
ingests, and a gateway with the same setting finds a paraphrase by meaning (real broker, Redis and
warehouse emulator)."""

from __future__ import annotations

import redis

from app.embed import MINILM_DIM, MINILM_NAME
from app.settings import Settings
from sinks.hotset import keys, vectors
from tests.integration.embed.test_semantic_search import PUBLIC, QUERY, TARGET, chitchat
from tests.support.gateway import eid, running
from tests.support.kafka import event, publish
from tests.support.stack import Proc, Stack, isolated_topics, wait_until


async def test_a_minilm_worker_and_gateway_search_by_meaning(
    stack: Stack, warehouse_table: Settings, rds: redis.Redis, tenant: str
) -> None:
    del warehouse_table
    env, settings = isolated_topics(stack, "mini", MEMSTREAM_EMBED_MODEL="minilm")
    worker = Proc(["worker", "--agents", "ingest,embed"], env, stack.tmp / f"worker-minilm-{tenant}.log").start()
    try:
        texts = [TARGET, *chitchat(40)]
        events = [
            event(tenant, eid(), content={"text": t}, channel=PUBLIC, session_id=f"s{i}") for i, t in enumerate(texts)
        ]
        publish(settings, events)
        wait_until(lambda: rds.zcard(keys.vector_index(tenant)) >= len(events), timeout_s=120, interval_s=0.2)
        members = rds.zrange(keys.vector_index(tenant), 0, 0)
        raw = stack.redis_client(decode=False).get(keys.vector(tenant, str(members[0])))
        assert raw is not None
        _, meta, vec = vectors.decode(raw)
        assert (meta.model, meta.dim, vec.shape) == (MINILM_NAME, MINILM_DIM, (MINILM_DIM,))

        async with running(settings) as gw:
            r = await gw.get(tenant, "/api/v2/memory/search", params={"q": QUERY, "mode": "semantic", "limit": 3})
            assert r.status_code == 200, r.text
            assert r.json()["results"][0]["record"]["content"]["text"] == TARGET
            kw = await gw.get(tenant, "/api/v2/memory/search", params={"q": QUERY, "mode": "keyword"})
            assert TARGET not in [h["record"]["content"]["text"] for h in kw.json()["results"]]
    finally:
        worker.stop()

"""The ingest agent's write order against the real broker and Redis: a batch's records are
acknowledged by the broker before the hotset (and its event ledger) holds any of its events. A
broker that cannot take them leaves the hotset untouched; the loop's retry of the same batch then
writes both (were the ledger written first, the retry would read its events as replays and
publish nothing)."""

from __future__ import annotations

import orjson
import pytest
import redis

from agents.ingest import IngestProcessor
from agents.loop import Item
from app import devstack
from app.kafka import AsyncProducer, BrokerUnavailable
from app.settings import DEFAULT_TTLS
from sinks.hotset import Hotset, keys
from tests.support.kafka import event, read_topic
from tests.support.stack import Stack

N = 2000  # a tenant of thousands of memories, in one batch (twice the default batch size)


async def test_the_hotset_holds_nothing_of_a_batch_the_broker_did_not_acknowledge(
    stack: Stack, rds: redis.Redis, tenant: str
) -> None:
    settings = stack.settings()
    client = stack.async_redis()
    hotset = Hotset(client, dict(DEFAULT_TTLS), 3600)
    items = [
        Item(orjson.dumps(event(tenant, f"e{i}", content={"text": f"turn {i}"})), settings.topic_events, 0, i, None)
        for i in range(N)
    ]
    nowhere = stack.settings(kafka_bootstrap=f"127.0.0.1:{devstack.free_port()}")
    unreachable = AsyncProducer(nowhere, **{"message.timeout.ms": 1000})
    live = AsyncProducer(settings)
    try:
        down = IngestProcessor(settings, hotset, unreachable)
        batch = down.prepare(items)
        with pytest.raises(BrokerUnavailable):
            await down.write(batch)
        assert list(rds.scan_iter(match=keys.memory(tenant, "*"))) == []
        assert list(rds.scan_iter(match=keys.seen(tenant, "*"))) == []

        # The loop retries the same batch: `write` returns once the broker has the records; the
        # hotset's write is the `finish` it returns, which the loop runs next.
        finish = await IngestProcessor(settings, hotset, live).write(batch)
        published = [k for k, _ in read_topic(settings, settings.topic_records) if k and k.startswith(tenant.encode())]
        assert len(published) == N
        assert finish is not None
        assert list(rds.scan_iter(match=keys.seen(tenant, "*"))) == []
        await finish()
        assert rds.hget(keys.stats(tenant), "writes") == str(N)
    finally:
        unreachable.close(0.1)
        live.close()
        await client.aclose()

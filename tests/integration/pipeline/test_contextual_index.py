"""Contextual indexing across real parts (Tansu -> worker -> redis-server -> gateway): a
conversation turn is found by the words of the turn before it in its session, and search still
answers with the turn's own text."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import redis

from app.models import MemoryEvent, SourcePosition, derive_memory_id
from app.pipeline import prepare
from app.rebuild import restore_intent
from app.redis_client import create_redis
from app.settings import Settings
from sinks.hotset import Hotset, keys, layout
from tests.support.gateway import Gateway
from tests.support.kafka import event, publish
from tests.support.stack import stored, wait_until

TOPICS = (
    "the staging cluster needs a new node pool",
    "remember that the design review moved to the afternoon",
    "the invoice export to the accounting team is late again",
    "reading list: two novels and a book about typography",
    "the API rate limit for the partner integration is per key",
    "order more coffee beans for the office kitchen",
    "the customer asked for a CSV export of last quarter",
    "migrate the metrics dashboards to the new folder",
)


def at(minute: int, second: int = 0) -> str:
    return f"2026-03-01T{10 + minute // 60:02d}:{minute % 60:02d}:{second:02d}Z"


def mid(tenant: str, eid: str) -> str:
    return derive_memory_id(tenant, eid)


async def search(gateway: Gateway, tenant: str, q: str) -> dict[str, dict[str, Any]]:
    # Keyword mode: the keyword index is under test (hybrid would add turns near in meaning).
    r = await gateway.get(tenant, "/api/v2/memory/search", params={"q": q, "limit": 10, "mode": "keyword"})
    assert r.status_code == 200, r.text
    return {h["memory_id"]: h for h in r.json()["results"]}


def seed_noise(settings: Settings, rds: redis.Redis, tenant: str, n: int = 3000) -> None:
    """A tenant with thousands of turns over a hundred sessions, none about the queries below."""
    noise = [
        event(tenant, f"n{i}", session_id=f"bg{i % 100}", content={"text": f"{TOPICS[i % len(TOPICS)]} ({i})"})
        for i in range(n)
    ]
    publish(settings, noise)
    wait_until(lambda: int(rds.hget(keys.stats(tenant), "writes") or 0) >= n, timeout_s=120)


async def test_a_reply_is_found_by_the_question_before_it(
    gateway: Gateway, settings: Settings, rds: redis.Redis, tenant: str
) -> None:
    seed_noise(settings, rds, tenant)
    # Question and reply in one batch (the planner carries the session's previous turn)...
    publish(
        settings,
        [
            event(
                tenant,
                "q1",
                session_id="plan",
                content={"text": "Shall we move the launch to Friday?"},
                occurred_at=at(1),
            ),
            event(
                tenant, "other", session_id="elsewhere", content={"text": "Sounds good to me."}, occurred_at=at(1, 2)
            ),
            event(tenant, "a1", session_id="plan", content={"text": "Yes, let's do that."}, occurred_at=at(1, 5)),
        ],
    )
    wait_until(lambda: stored(rds, tenant, mid(tenant, "a1")), timeout_s=60)
    # ...and across batches (the state read fetches the session's newest memory from the hotset).
    publish(
        settings,
        [
            event(
                tenant,
                "q2",
                session_id="offsite",
                content={"text": "Can we raise the dinner budget to sixty euros?"},
                occurred_at=at(2),
            )
        ],
    )
    wait_until(lambda: stored(rds, tenant, mid(tenant, "q2")), timeout_s=60)
    publish(
        settings,
        [event(tenant, "a2", session_id="offsite", content={"text": "Approved, go ahead."}, occurred_at=at(2, 30))],
    )
    wait_until(lambda: stored(rds, tenant, mid(tenant, "a2")), timeout_s=60)

    hits = await search(gateway, tenant, "launch friday")
    assert mid(tenant, "a1") in hits and mid(tenant, "q1") in hits, hits.keys()
    assert mid(tenant, "other") not in hits  # another session's turn is not indexed with this one
    reply = hits[mid(tenant, "a1")]["record"]
    assert reply["content"]["text"] == "Yes, let's do that."
    assert layout.CONTEXT_TERMS not in reply
    hits = await search(gateway, tenant, "dinner budget sixty euros")
    assert mid(tenant, "a2") in hits, hits.keys()
    assert hits[mid(tenant, "a2")]["record"]["content"]["text"] == "Approved, go ahead."
    # The question's own words still rank it above the reply found through it.
    assert hits[mid(tenant, "q2")]["relevance"] > hits[mid(tenant, "a2")]["relevance"]
    # A session's first turn has no previous turn to be indexed with.
    hits = await search(gateway, tenant, "sounds good")
    assert set(hits) == {mid(tenant, "other")}
    # Retrieve returns the record as memory.records holds it.
    r = await gateway.get(tenant, "/api/v2/memory/retrieve", params={"memory_id": mid(tenant, "a1")})
    assert r.status_code == 200 and layout.CONTEXT_TERMS not in r.json()["record"], r.text


async def test_reindex_brings_an_existing_hotset_to_the_contextual_index(
    gateway: Gateway, settings: Settings, tenant: str
) -> None:
    """`memstream rebuild --reindex` rewrites memories the hotset already holds at their version;
    a plain rebuild leaves a warm hotset as it is."""

    def record(eid: str, text: str, second: int) -> Any:
        body = event(tenant, eid, session_id="s", content={"text": text}, occurred_at=at(0, second))
        return prepare(MemoryEvent.model_validate(body), SourcePosition.trusted("memory.events", 0, second)).record

    question = record("rq", "Should the quarterly report go out on Monday?", 1)
    reply = record("ra", "Agreed.", 2)
    now = datetime.now(UTC)
    ttl = 10 * 365 * 86400
    redis_ = create_redis(settings)
    hotset = Hotset(redis_, settings.hotset_ttl_seconds, settings.state_ttl_seconds)
    try:
        # A hotset written without contextual terms.
        old = [restore_intent(question, ttl, now), restore_intent(reply, ttl, now)]
        assert await hotset.apply([i for i in old if i]) == 2
        assert reply.memory_id not in await search(gateway, tenant, "quarterly report monday")
        plain = restore_intent(reply, ttl, now, previous_text=question.content["text"])  # type: ignore[index]
        assert plain is not None and await hotset.apply([plain]) == 0
        assert reply.memory_id not in await search(gateway, tenant, "quarterly report monday")
        again = restore_intent(reply, ttl, now, previous_text=question.content["text"], reindex=True)  # type: ignore[index]
        assert again is not None and await hotset.apply([again]) == 1
        hits = await search(gateway, tenant, "quarterly report monday")
        assert reply.memory_id in hits and hits[reply.memory_id]["record"]["content"]["text"] == "Agreed."
    finally:
        await redis_.aclose()


async def test_a_forgotten_turns_words_no_longer_find_the_turn_after_it(
    gateway: Gateway, settings: Settings, rds: redis.Redis, tenant: str
) -> None:
    seed_noise(settings, rds, tenant, n=1000)
    turns = [
        ("t1", "Book the offsite dinner for the whole team", 1),
        ("t2", "The zanzibar partner wants the contract renewed quietly", 2),
        ("t3", "Yes, go ahead with that.", 3),
    ]
    publish(
        settings, [event(tenant, e, session_id="deal", content={"text": t}, occurred_at=at(m)) for e, t, m in turns]
    )
    wait_until(lambda: stored(rds, tenant, mid(tenant, "t3")), timeout_s=60)
    assert set(await search(gateway, tenant, "zanzibar")) == {mid(tenant, "t2"), mid(tenant, "t3")}

    r = await gateway.delete(tenant, f"/api/v2/memory/{mid(tenant, 't2')}", params={"wait": "visible"})
    assert r.status_code == 202, r.text
    # Forgetting is real: the forgotten turn's words find nothing, not even the turn indexed with them...
    wait_until(lambda: rds.zscore(keys.term(tenant, "zanzibar"), mid(tenant, "t3")) is None, timeout_s=30)
    assert await search(gateway, tenant, "zanzibar") == {}
    assert not rds.exists(keys.term(tenant, "zanzibar"))
    # ...and the turn after it is indexed with the turn before it instead.
    assert mid(tenant, "t3") in await search(gateway, tenant, "offsite dinner")
    # A turn written after the delete borrows from the newest remaining turn, not the forgotten one.
    publish(settings, [event(tenant, "t4", session_id="deal", content={"text": "Done."}, occurred_at=at(4))])
    wait_until(lambda: stored(rds, tenant, mid(tenant, "t4")), timeout_s=60)
    assert mid(tenant, "t4") in await search(gateway, tenant, "ahead")

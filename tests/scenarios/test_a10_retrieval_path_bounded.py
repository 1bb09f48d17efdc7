"""A10 Retrieval Path Bounded: a search whose term is in every one of the tenant's 30,000
memories examines at most the configured candidate pool and answers from the hotset."""

from __future__ import annotations

from tests.support.scenarios import COMMON_WORD, SEED_PER_TYPE, Agent, Seeded


async def test_search_examines_a_bounded_pool(seeded: Seeded, agent: Agent) -> None:
    pool = seeded.settings.search_candidate_pool
    assert seeded.memories >= 6 * SEED_PER_TYPE > 10 * pool
    for q, extra in ((COMMON_WORD, {}), (f"{COMMON_WORD} billing", {}), (COMMON_WORD, {"type": "decision"})):
        found = await agent.ok("/api/v2/memory/search", q=q, limit=50, fallback="false", **extra)
        assert 0 < found["candidates_examined"] <= pool == found["candidate_pool"]
        assert len(found["results"]) == 50 and found["warehouse"] != "used"
        assert all(h["source"] == "hotset" for h in found["results"])
        scores = [h["score"] for h in found["results"]]
        assert scores == sorted(scores, reverse=True)

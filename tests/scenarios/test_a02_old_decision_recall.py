"""A2 Old Decision Recall: a decision taken two weeks ago is found again among thousands of newer
memories, from the hotset, and stands in the session's context."""

from __future__ import annotations

from tests.support.scenarios import Agent, Seeded, ago


async def test_two_week_old_decision_is_retrieved(seeded: Seeded, agent: Agent) -> None:
    session = seeded.scope("recall")
    [decision] = seeded.produce(
        [
            seeded.event(
                type="decision",
                key=f"{session}-vendor",
                session_id=session,
                content={"text": "Payments go through the escrow ledger, never direct transfers"},
                occurred_at=ago(days=14),
            )
        ]
    )
    seeded.produce(
        [
            seeded.event(
                session_id=session,
                content={"text": f"chatter {i} about payments and transfers"},
                occurred_at=ago(minutes=200 - i),
            )
            for i in range(200)
        ]
    )
    found = await agent.ok("/api/v2/memory/search", q="escrow ledger payments", type="decision")
    assert found["results"][0]["memory_id"] == decision
    assert found["results"][0]["source"] == "hotset"
    got = await agent.ok("/api/v2/memory/retrieve", memory_id=decision)
    assert got["source"] == "hotset" and got["record"]["superseded_by"] is None
    ctx = await agent.ok("/api/v2/context", session_id=session, budget_tokens=4000)
    assert decision in [i["memory_id"] for i in ctx["items"] if i["section"] == "decisions"]

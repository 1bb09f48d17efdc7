"""A3 Decision Supersession: the latest decision of a key wins, also when an older one arrives
later; older ones stay retrievable with `superseded_by`."""

from __future__ import annotations

from tests.support.scenarios import Agent, Seeded, ago


async def test_latest_decision_wins(seeded: Seeded, agent: Agent) -> None:
    session = seeded.scope("supersede")
    key = f"{session}-database"

    def decision(text: str, hours: float) -> dict[str, object]:
        return seeded.event(
            type="decision", key=key, session_id=session, content={"text": text}, occurred_at=ago(hours=hours)
        )

    [middle, newest] = seeded.produce([decision("Warehouse on Postgres", 2), decision("Warehouse on Snowflake", 1)])
    [late_oldest] = seeded.produce([decision("Warehouse on MySQL", 3)])  # older, arrives last

    found = await agent.ok("/api/v2/memory/search", q="warehouse", type="decision", session_id=session)
    assert [h["memory_id"] for h in found["results"]] == [newest]
    every = await agent.ok(
        "/api/v2/memory/search", q="warehouse", type="decision", session_id=session, include_superseded="true"
    )
    assert {h["memory_id"] for h in every["results"]} == {middle, newest, late_oldest}
    for old in (middle, late_oldest):
        assert (await agent.ok("/api/v2/memory/retrieve", memory_id=old))["record"]["superseded_by"] == newest
    ctx = await agent.ok("/api/v2/context", session_id=session, budget_tokens=4000)
    decisions = [i for i in ctx["items"] if i["section"] == "decisions" and i["key"] == key]
    assert [i["memory_id"] for i in decisions] == [newest]

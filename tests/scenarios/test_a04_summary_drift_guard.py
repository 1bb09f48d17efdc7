"""A4 Summary Drift Guard: a summary must cite memories of its tenant; an uncited one is refused
(gateway 422, dead letter from the topic) and a summary whose cited memory is deleted leaves the
context."""

from __future__ import annotations

from tests.support.scenarios import Agent, Seeded, ago, eventually


async def test_summaries_need_live_citations(seeded: Seeded, agent: Agent) -> None:
    session = seeded.scope("drift")
    cited = seeded.produce(
        [
            seeded.event(
                session_id=session,
                content={"text": f"standup note {i}: shipping the importer"},
                occurred_at=ago(minutes=30 - i),
            )
            for i in range(3)
        ]
    )
    uncited = await agent.post(
        "/api/v2/memory/store", {"type": "summary", "session_id": session, "content": {"text": "we shipped everything"}}
    )
    assert uncited.status_code == 422 and uncited.json()["error"]["code"]
    [bad] = seeded.produce([seeded.event(type="summary", session_id=session, content={"text": "no sources"})])
    assert (await agent.get("/api/v2/memory/retrieve", memory_id=bad)).status_code == 404

    r = await agent.post(
        "/api/v2/memory/store",
        {"type": "summary", "session_id": session, "citations": cited, "content": {"text": "The importer shipped"}},
        wait="visible",
    )
    assert r.status_code == 202, r.text
    summary = r.json()["memory_id"]
    ctx = await agent.ok("/api/v2/context", session_id=session, budget_tokens=4000)
    assert [i["memory_id"] for i in ctx["items"] if i["section"] == "summary"] == [summary]
    assert (await agent.ok("/api/v2/memory/retrieve", memory_id=summary))["record"]["citations"] == cited

    deleted = await agent.client.delete(f"/api/v2/memory/{cited[0]}", headers=agent.headers)
    assert deleted.status_code in (200, 202), deleted.text

    async def gone() -> bool:
        ctx = await agent.ok("/api/v2/context", session_id=session, budget_tokens=4000)
        return summary not in [i["memory_id"] for i in ctx["items"]]

    await eventually(gone)  # a summary citing a deleted memory is stale: out of context

"""A7 Public Channel Suppression: a read for a public channel never returns private or internal
memories, in search, context or retrieve."""

from __future__ import annotations

from tests.support.scenarios import Agent, Seeded


async def test_public_reads_see_public_memories_only(seeded: Seeded, agent: Agent) -> None:
    session = seeded.scope("channel")
    ids = seeded.produce(
        [
            seeded.event(
                session_id=session,
                channel={"id": f"{session}-c", "visibility": vis},
                content={"text": f"{vis} note about the quarterly figures {i}"},
            )
            for vis in ("public", "internal", "private")
            for i in range(5)
        ]
    )
    public, internal, private = ids[:5], ids[5:10], ids[10:]

    found = await agent.ok(
        "/api/v2/memory/search", q="quarterly figures", session_id=session, channel_visibility="public", limit=50
    )
    assert {h["memory_id"] for h in found["results"]} == set(public)
    seen_internal = await agent.ok(
        "/api/v2/memory/search", q="quarterly figures", session_id=session, channel_visibility="internal", limit=50
    )
    assert {h["memory_id"] for h in seen_internal["results"]} == set(public + internal)
    ctx = await agent.ok("/api/v2/context", session_id=session, channel_visibility="public", budget_tokens=4000)
    served = {i["memory_id"] for i in ctx["items"]}
    assert set(public) <= served and not served & set(internal + private)
    for hidden in (internal[0], private[0]):
        r = await agent.get("/api/v2/memory/retrieve", memory_id=hidden, channel_visibility="public")
        assert r.status_code == 404 and r.json()["error"]["code"]
    # The seeded tenant's thousands of private memories stay out of a public tenant-wide search.
    wide = await agent.ok("/api/v2/memory/search", q="roadmap", channel_visibility="public", limit=100)
    assert wide["results"] and all(h["record"]["visibility"] == "public" for h in wide["results"])

"""A12 Dedupe Prevention: the same words written again and again (retries, replays, chatty agents)
are one memory, so they take prompt space once."""

from __future__ import annotations

from tests.support.scenarios import Agent, Seeded, ago


async def test_repeats_do_not_bloat_the_prompt(seeded: Seeded, agent: Agent) -> None:
    session = seeded.scope("dedupe")
    said = "Remember: the staging database is read-only on Fridays"
    first = seeded.event(session_id=session, content={"text": said}, occurred_at=ago(minutes=30))
    copies = [
        seeded.event(session_id=session, content={"text": f"  {said.upper()} "}, occurred_at=ago(minutes=29 - i / 10))
        for i in range(40)
    ]
    others = [
        seeded.event(session_id=session, content={"text": f"distinct remark {i}"}, occurred_at=ago(minutes=20 - i / 10))
        for i in range(10)
    ]
    ids = seeded.produce([first, *copies, first, first, *others])  # re-published event ids too
    kept, copy_ids = ids[0], set(ids[1 : 1 + len(copies)]) - {ids[0]}

    ctx = await agent.ok("/api/v2/context", session_id=session, budget_tokens=4000)
    texts = [i["text"].strip().lower() for i in ctx["items"]]
    assert texts.count(said.lower()) == 1
    recent = [i["memory_id"] for i in ctx["items"] if i["section"] == "recent"]
    assert len(recent) == 11 and recent[0] == kept
    found = await agent.ok(
        "/api/v2/memory/search",
        q="staging database read-only fridays",
        session_id=session,
        limit=50,
        mode="keyword",  # the words' copies; hybrid would add memories near in meaning
    )
    hits = [h["memory_id"] for h in found["results"]]
    # The statement once, none of its copies (the turn after it may match through contextual
    # indexing: it borrows its predecessor's words).
    assert hits.count(kept) == 1 and not set(hits) & copy_ids, hits

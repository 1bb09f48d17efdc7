"""A6 Multi-Agent Handoff: one agent hands work to another with a packet citing memories; the
recipient finds every pending packet, reads the references, and acknowledges exactly once."""

from __future__ import annotations

from tests.support.scenarios import Agent, Seeded


async def test_handoff_packets_are_delivered_and_acked_once(seeded: Seeded, agent: Agent) -> None:
    session, planner, coder = seeded.scope("handoff"), seeded.scope("planner"), seeded.scope("coder")
    refs = seeded.produce(
        [seeded.event(session_id=session, agent_id=planner, content={"text": f"spec part {i}"}) for i in range(2)]
    )
    packets = []
    for n in range(25):  # more than one default page
        r = await agent.post(
            "/api/v2/handoffs",
            {
                "to_agent": coder,
                "from_agent": planner,
                "session_id": session,
                "task": f"implement part {n}",
                "text": f"see spec, part {n}",
                "citations": refs,
            },
            wait="visible",
        )
        assert r.status_code == 202, r.text
        packets.append(r.json()["memory_id"])

    pending: list[dict[str, object]] = []
    cursor = None
    while True:
        page = await agent.ok("/api/v2/handoffs", to_agent=coder, limit=10, **({"cursor": cursor} if cursor else {}))
        pending += page["handoffs"]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    assert sorted(str(h["handoff_id"]) for h in pending) == sorted(packets)
    assert {str(h["from_agent"]) for h in pending} == {planner}
    assert all(h["record"]["citations"] == refs for h in pending)  # type: ignore[index]

    first = await agent.post(f"/api/v2/handoffs/{packets[0]}/ack", {"agent_id": coder}, wait="visible")
    assert first.status_code == 200, first.text
    again = await agent.post(f"/api/v2/handoffs/{packets[0]}/ack", {"agent_id": coder})
    assert again.status_code == 409 and again.json()["error"]["code"]
    left = await agent.ok("/api/v2/handoffs", to_agent=coder, limit=100)
    assert packets[0] not in [h["handoff_id"] for h in left["handoffs"]] and len(left["handoffs"]) == 24

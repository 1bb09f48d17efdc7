"""A9 Fast Path Assembly: context for a session of a tenant with 30,000 memories is assembled
from the hotset alone — no warehouse query — within the budget, every item with its memory id.
(How fast is measured in bench/gateway.py, not asserted here.)"""

from __future__ import annotations

import re

from tests.support.scenarios import AGENTS, Agent, Seeded


async def warehouse_calls(agent: Agent) -> float:
    text = (await agent.client.get("/metrics")).text
    return sum(float(v) for v in re.findall(r"^memstream_gateway_warehouse_calls_total\{[^}]*\} (\S+)$", text, re.M))


async def test_context_comes_from_the_hotset(seeded: Seeded, agent: Agent) -> None:
    before = await warehouse_calls(agent)
    for s in range(0, 200, 10):
        session, agent_id = f"seed-s{s:03d}", f"seed-a{s % AGENTS:02d}"
        ctx = await agent.ok("/api/v2/context", session_id=session, agent_id=agent_id, budget_tokens=1500)
        assert ctx["items"] and ctx["used_tokens"] <= 1500
        assert all(i["memory_id"].startswith("m-") for i in ctx["items"])
        sections = [i["section"] for i in ctx["items"]]
        order = ["identity", "rules", "decisions", "tasks", "summary", "recent"]
        assert sections == sorted(sections, key=order.index), "prompt order"
        assert "recent" in sections
    assert await warehouse_calls(agent) == before, "the fast path asked the warehouse"

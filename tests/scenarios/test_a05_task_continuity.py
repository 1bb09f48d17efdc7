"""A5 Task Continuity: an agent restarted mid-session gets its open tasks (newest status of each),
the session's summary and its transcript back from one context call."""

from __future__ import annotations

from tests.support.scenarios import Agent, Seeded, ago


async def test_session_restart_recovers_open_tasks(seeded: Seeded, agent: Agent) -> None:
    session, me = seeded.scope("continuity"), seeded.scope("worker-agent")

    def task(key: str, status: str, minutes: float) -> dict[str, object]:
        return seeded.event(
            type="task",
            key=f"{session}-{key}",
            session_id=session,
            agent_id=me,
            content={"text": f"task {key}", "status": status},
            occurred_at=ago(minutes=minutes),
        )

    said = seeded.produce(
        [
            seeded.event(
                session_id=session,
                agent_id=me,
                content={"text": f"turn {i} of the migration work"},
                occurred_at=ago(minutes=120 - i),
            )
            for i in range(80)
        ]
        + [
            task("schema", "open", 90),
            task("backfill", "in_progress", 80),
            task("cutover", "blocked", 70),
            task("docs", "open", 60),
        ]
    )
    [done] = seeded.produce([task("docs", "done", 10)])  # finished just before the restart
    seeded.produce(
        [
            seeded.event(
                type="summary",
                session_id=session,
                agent_id=me,
                citations=said[:3],
                content={"text": "migration: schema, backfill, cutover"},
                occurred_at=ago(minutes=5),
            )
        ]
    )

    # The agent process restarts: all it knows is its session and agent id.
    ctx = await agent.ok("/api/v2/context", session_id=session, agent_id=me, budget_tokens=4000)
    tasks = [(i["key"], i["status"]) for i in ctx["items"] if i["section"] == "tasks"]
    assert tasks == [
        (f"{session}-backfill", "in_progress"),
        (f"{session}-cutover", "blocked"),
        (f"{session}-schema", "open"),
    ]
    assert done not in [i["memory_id"] for i in ctx["items"]]
    assert [i["text"] for i in ctx["items"] if i["section"] == "summary"] == ["migration: schema, backfill, cutover"]
    recent = [i["text"] for i in ctx["items"] if i["section"] == "recent"]
    assert recent and recent[-1] == "turn 79 of the migration work"  # oldest first, ending with the last turn
    assert all(i["memory_id"] for i in ctx["items"]) and ctx["used_tokens"] <= 4000

"""An agent-like loop (no LLM) on the memstream SDK: two agents share one memory.

The planner remembers a real conversation (chitchat-dataset) turn by turn and prints the context
it would put in its prompt each turn; it records a decision, then changes it (the newer one
replaces the older in the context); it hands a task to a booker, which finds it in its inbox and
acknowledges it. Checks what it expects and exits 1 if memstream disagrees.

    memstream dev &                                      # the whole stack on loopback
    MEMSTREAM_GATEWAY_URL=http://127.0.0.1:8080 python examples/agent_loop.py --short

Credential: MEMSTREAM_API_KEY or MEMSTREAM_BEARER_TOKEN; without one it uses the development
tenant header that `memstream dev` accepts (--dev-tenant).
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from collections.abc import Iterator

from memstream_client import ContextResult, MemstreamClient

DEV_TENANT_HEADER = "X-Memstream-Dev-Tenant"


def conversation(turns: int) -> Iterator[tuple[str, str, str]]:
    """(speaker, text, original timestamp) of the first conversation with enough messages."""
    import chitchat_dataset

    for conv in chitchat_dataset.Dataset().values():
        messages = [m for turn in conv["messages"] for m in turn if m["text"]]
        if len(messages) < turns:
            continue
        speakers: dict[str, str] = {}
        for m in messages[:turns]:
            speaker = speakers.setdefault(m["sender"], ("alice", "bob")[len(speakers) % 2])
            yield speaker, m["text"], m["timestamp"]
        return


def show(turn: int, ctx: ContextResult) -> None:
    print(f"--- turn {turn}: context {ctx.used_tokens}/{ctx.budget_tokens} tokens, {len(ctx.items)} items")
    for item in ctx.items:
        print(f"    [{item.section}] {item.text[:90]}")


def client_from(args: argparse.Namespace) -> MemstreamClient:
    url = args.gateway_url
    if not url:
        sys.exit("set MEMSTREAM_GATEWAY_URL or pass --gateway-url (memstream dev prints it)")
    if os.environ.get("MEMSTREAM_API_KEY") or os.environ.get("MEMSTREAM_BEARER_TOKEN"):
        return MemstreamClient.from_env(base_url=url)
    return MemstreamClient(url, headers={DEV_TENANT_HEADER: args.dev_tenant})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gateway-url", default=os.environ.get("MEMSTREAM_GATEWAY_URL"))
    p.add_argument("--dev-tenant", default="agent-loop-demo", help="tenant when no credential is set")
    p.add_argument("--turns", type=int, default=24)
    p.add_argument("--short", action="store_true", help="a few turns (for tests and a quick look)")
    args = p.parse_args(argv)
    turns = 6 if args.short else args.turns
    session = f"loop-{uuid.uuid4().hex[:8]}"
    problems: list[str] = []

    with client_from(args) as memory:
        print(f"gateway {memory.health().status}; session {session}")
        memory.store(type="identity", key="planner.name", agent_id="planner", session_id=session,
                     text="I am Planner; I organise the team's meetups.", wait=True)  # fmt: skip
        first = memory.store(type="decision", key="meetup.venue", agent_id="planner", session_id=session,
                             text="The meetup is at the Blue Cafe.", wait=True)  # fmt: skip
        second, changed_at = first, max(1, turns // 2)
        for turn, (speaker, text, said_at) in enumerate(conversation(turns), start=1):
            memory.store(type="event", agent_id=speaker, session_id=session, text=text,
                         metadata={"said_at": said_at, "source": "chitchat-dataset"}, wait=True)  # fmt: skip
            if turn == changed_at:
                print("planner: changing the venue decision")
                second = memory.store(type="decision", key="meetup.venue", agent_id="planner", session_id=session,
                                      text="The meetup moves to the City Library.", wait=True)  # fmt: skip
            show(turn, memory.context(session_id=session, agent_id="planner", budget_tokens=400))

        ctx = memory.context(session_id=session, agent_id="planner", budget_tokens=400)
        decisions = [i.memory_id for i in ctx.items if i.section == "decisions"]
        if decisions != [second.memory_id]:
            problems.append(f"the context should hold only the changed decision, holds {decisions}")
        # Keyword mode: the decision history is the memories naming the meetup (hybrid, the default
        # once vectors exist, would add the session's memories nearest in meaning).
        history = memory.search("meetup", session_id=session, include_superseded=True, mode="keyword")
        print(f"decision history: {[h.record.text for h in history.results]}")
        if {h.memory_id for h in history.results} != {first.memory_id, second.memory_id}:
            problems.append("the search with include_superseded should find both decisions")

        task = memory.hand_off(to_agent="booker", from_agent="planner", session_id=session,
                               task="Book the City Library room for the meetup",
                               text="Twelve people, Thursday evening; the venue changed from the Blue Cafe.",
                               wait=True)  # fmt: skip
        inbox = memory.handoffs("booker")
        mine = [h for h in inbox.handoffs if h.handoff_id == task.memory_id]
        print(f"booker inbox: {[h.task for h in inbox.handoffs]}")
        if not mine:
            problems.append("the booker did not find the handoff")
        else:
            ack = memory.ack_handoff(mine[0].handoff_id, agent_id="booker", note="booked")
            print(f"booker acknowledged {ack.handoff_id}")
            pending = [h.handoff_id for h in memory.handoffs("booker").handoffs]
            if task.memory_id in pending:
                problems.append("an acknowledged handoff is still pending")

    for problem in problems:
        print(f"unexpected: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())

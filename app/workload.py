"""Sample workloads: real conversations (chitchat-dataset) plus scripted agent memories.

Used by `make demo` and the benchmarks, so both exercise the same realistic feed.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from app.models import derive_memory_id


def conversation_events(tenants: list[str], limit: int, seed: int = 7, tag: str = "cc") -> Iterator[dict[str, Any]]:
    """`limit` chat messages as memory events, one session per conversation, spread over tenants."""
    import chitchat_dataset

    rng = random.Random(seed)
    dataset = chitchat_dataset.Dataset()
    n = 0
    for conv_id, conv in dataset.items():
        tenant = tenants[rng.randrange(len(tenants))]
        agents: dict[str, str] = {}
        for turn in conv["messages"]:
            for m in turn:
                agent = agents.setdefault(m["sender"], f"agent-{len(agents) + 1}")
                yield {
                    "schema_version": 1,
                    "event_id": f"{tag}-{n}",
                    "tenant_id": tenant,
                    "type": "event",
                    "session_id": conv_id,
                    "agent_id": agent,
                    "channel": {"id": f"chat-{conv_id[:8]}", "visibility": "internal"},
                    "content": {"text": m["text"] or "(empty)"},
                    "occurred_at": m["timestamp"],
                }
                n += 1
                if n >= limit:
                    return


def _at(base: datetime, minutes: int) -> str:
    return (base + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def scenario_events(tenant: str, session: str = "demo-session") -> list[dict[str, Any]]:
    """Decisions that supersede each other, tasks, secrets, duplicates, privacy and bad input."""
    base = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    counter = itertools.count()

    def ev(minutes: int, **fields: Any) -> dict[str, Any]:
        return {
            "schema_version": 1,
            "event_id": f"demo-{tenant}-{next(counter)}",
            "tenant_id": tenant,
            "session_id": session,
            "agent_id": "planner",
            "occurred_at": _at(base, minutes),
            **fields,
        }

    events = [
        ev(0, type="identity", key="agent.name", content={"text": "I am Planner, the release coordinator."}),
        ev(1, type="rule", key="tone", content={"text": "Answer in short, plain sentences."}),
        ev(2, type="decision", key="warehouse", content={"text": "Use Postgres as the system of record."}),
        # The newer decision arrives first; the older one arriving later must not win.
        (
            snowflake := ev(
                30, type="decision", key="warehouse", content={"text": "Use Snowflake as the system of record."}
            )
        ),
        ev(10, type="decision", key="warehouse", content={"text": "Use BigQuery as the system of record."}),
        ev(3, type="task", key="release-42", content={"text": "Ship release 42", "status": "open"}),
        ev(40, type="task", key="release-42", content={"text": "Ship release 42", "status": "in_progress"}),
        ev(4, type="event", content={"text": "Deploy key is AKIAIOSFODNN7EXAMPLE, db password=hunter22"}),
        ev(5, type="event", content={"text": "Card on file: 4111 1111 1111 1111"}),
        ev(6, type="event", content={"text": "Standup moved to 10:00."}),
        ev(7, type="event", content={"text": "standup moved to 10:00."}),  # duplicate within the window
        ev(8, type="event", content={"text": "My therapist said ..."}, remember=False),
        ev(
            9,
            type="event",
            content={"text": "Release notes are public."},
            channel={"id": "announcements", "visibility": "public"},
        ),
        ev(
            50,
            type="handoff",
            content={"text": "Take over release 42", "to_agent": "deployer", "task": "Run the production deploy"},
        ),
        ev(
            60,
            type="summary",
            content={"text": "Planning for release 42 is done; Snowflake chosen."},
            # A summary cites memories that exist (the drift guard dead-letters it otherwise).
            citations=[derive_memory_id(tenant, snowflake["event_id"])],
        ),
        # Invalid: unknown field, missing text, wrong type -> dead letters.
        ev(70, type="event", content={"text": "x"}, mood="happy"),
        ev(71, type="event", content={}),
        ev(72, type="memo", content={"text": "x"}),
    ]
    return events

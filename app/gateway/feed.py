"""The change feed as Server-Sent Events: which entries a subscriber sees and how they are framed.

Pure functions over the entries of a tenant's feed stream (`sinks.hotset.keys.feed`, appended by
the hotset write script, `Lua.APPLY`). GET /api/v2/subscribe
(app.gateway.routes_subscribe) reads the stream and sends what `matches` lets through, framed by
`frame`; the stream entry id is the SSE event id, so Last-Event-ID resumes from the stream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from app.gateway.visibility import allowed
from app.models import Visibility

KINDS = ("created", "updated", "superseded", "deleted", "handoff_delivered")
# A Redis stream id: milliseconds, then a sequence number.
STREAM_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")


def parse_id(value: str) -> tuple[int, int]:
    ms, _, seq = value.partition("-")
    return int(ms), int(seq)


@dataclass(frozen=True, slots=True)
class FeedFilter:
    """What a subscriber asked for, after the credential's rules (agent scope) were applied."""

    type: str | None = None
    session_id: str | None = None
    agent_id: str | None = None
    channel_visibility: Visibility | None = None


def matches(entry: dict[str, str], f: FeedFilter) -> bool:
    """Whether the subscriber sees this entry: the read rules of retrieve and search (a public
    channel sees public memories only). A handoff belongs to its sender and its recipient."""
    if entry.get("vis", "private") not in allowed(f.channel_visibility):
        return False
    if f.type is not None and entry.get("type") != f.type:
        return False
    if f.session_id is not None and entry.get("ses") != f.session_id:
        return False
    return f.agent_id is None or f.agent_id in (entry.get("ag"), entry.get("ta"))


def event_data(entry: dict[str, str]) -> dict[str, Any]:
    """The JSON an SSE event carries (docs/contract.md, the change feed)."""
    rec = entry.get("rec")
    return {
        "memory_id": entry.get("id", ""),
        "type": entry.get("type") or None,
        "visibility": entry.get("vis", "private"),
        "session_id": entry.get("ses") or None,
        "agent_id": entry.get("ag") or None,
        "version": entry.get("v") or None,
        "superseded_by": entry.get("sb") or None,
        "record": orjson.loads(rec) if rec else None,
    }


def frame(event: str, data: Any, event_id: str | None = None) -> bytes:
    """One SSE message. JSON data is a single line, so one `data:` field carries it."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\n".encode() + b"data: " + orjson.dumps(data) + b"\n\n"


HEARTBEAT = b": heartbeat\n\n"

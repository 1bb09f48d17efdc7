"""The change feed (GET /api/v2/subscribe): Server-Sent Events decoded into `ChangeEvent`s.

Transport-free: `SseDecoder` turns lines into messages, `Cursor` turns messages into what a
subscriber sees and remembers the last event id, so the sync and async `subscribe()` share it
and a reconnect resumes with Last-Event-ID.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from memstream_client.errors import MemstreamError

PATH = "/api/v2/subscribe"
CHANGES = frozenset({"created", "updated", "superseded", "deleted", "handoff_delivered"})


class SubscriptionDropped(MemstreamError):
    """The gateway ended the stream (`event: error`): `code` is `slow_subscriber`,
    `feed_unavailable` or `shutdown`; `details["last_event_id"]` is where to resume."""


@dataclass(frozen=True)
class ChangeEvent:
    """One change (`event` in CHANGES), or `gap` when a resume reached past the feed's horizon."""

    event: str
    id: str | None
    data: dict[str, Any]

    @property
    def memory_id(self) -> str | None:
        value = self.data.get("memory_id")
        return str(value) if value is not None else None

    @property
    def record(self) -> dict[str, Any] | None:
        rec = self.data.get("record")
        return rec if isinstance(rec, dict) else None

    @property
    def superseded_by(self) -> str | None:
        value = self.data.get("superseded_by")
        return str(value) if value is not None else None


@dataclass
class Message:
    event: str = "message"
    id: str | None = None
    data: list[str] = field(default_factory=list)


class SseDecoder:
    """Lines of a text/event-stream body in, complete messages out (comments are dropped)."""

    def __init__(self) -> None:
        self._msg = Message()

    def line(self, line: str) -> Message | None:
        if line == "":
            msg, self._msg = self._msg, Message()
            return msg if msg.data else None
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._msg.event = value
        elif name == "id":
            self._msg.id = value
        elif name == "data":
            self._msg.data.append(value)
        return None


@dataclass
class Cursor:
    """Where a subscription stands: the last event id seen (ready, or a change)."""

    last_event_id: str | None = None

    def take(self, msg: Message) -> ChangeEvent | None:
        """The event to hand to the caller, None for bookkeeping messages; raises
        SubscriptionDropped for the gateway's final `error`."""
        data = json.loads("\n".join(msg.data))
        if msg.event == "error":
            err = data.get("error") or {}
            details = err.get("details") or {}
            raise SubscriptionDropped(str(err.get("message", "")), str(err.get("code", "error")), details)
        if msg.id is not None:
            self.last_event_id = msg.id
        if msg.event in CHANGES or msg.event == "gap":
            return ChangeEvent(msg.event, msg.id, data)
        return None  # ready

    def headers(self) -> dict[str, str]:
        return {"Last-Event-ID": self.last_event_id} if self.last_event_id else {}


def params(
    type: str | None, session_id: str | None, agent_id: str | None, channel_visibility: str | None
) -> dict[str, str]:
    values = {"type": type, "session_id": session_id, "agent_id": agent_id, "channel_visibility": channel_visibility}
    return {k: v for k, v in values.items() if v is not None}

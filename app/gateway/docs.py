"""`Doc`: the read-side view of one canonical record, cheap to build from the hotset's JSON.

Ranking and context assembly run over thousands of these per second, so records stay plain
dicts (orjson) instead of being re-validated as `MemoryRecord` on every read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import orjson

from app.models import MemoryRecord

Source = Literal["hotset", "warehouse"]


@dataclass(frozen=True, slots=True)
class Doc:
    memory_id: str
    record: dict[str, Any]  # MemoryRecord as JSON-mode dict, `superseded_by` already authoritative
    source: Source = "hotset"

    @property
    def type(self) -> str | None:
        t = self.record.get("type")
        return str(t) if t is not None else None

    @property
    def key(self) -> str | None:
        return self.record.get("key")

    @property
    def content(self) -> dict[str, Any]:
        c = self.record.get("content")
        return c if isinstance(c, dict) else {}

    @property
    def text(self) -> str:
        t = self.content.get("text")
        return t if isinstance(t, str) else ""

    @property
    def status(self) -> str | None:
        s = self.content.get("status")
        return s if isinstance(s, str) else None

    @property
    def session_id(self) -> str | None:
        return self.record.get("session_id")

    @property
    def agent_id(self) -> str | None:
        return self.record.get("agent_id")

    @property
    def visibility(self) -> str:
        return str(self.record.get("visibility") or "private")

    @property
    def importance(self) -> float | None:
        v = self.record.get("importance")
        return float(v) if isinstance(v, int | float) else None

    @property
    def superseded_by(self) -> str | None:
        return self.record.get("superseded_by")

    @property
    def deleted(self) -> bool:
        return self.record.get("deleted_at") is not None

    @property
    def occurred_at(self) -> datetime:
        return datetime.fromisoformat(str(self.record["occurred_at"]))

    @property
    def occurred_ms(self) -> int:
        return int(self.occurred_at.timestamp() * 1000)


def from_hotset(memory_id: str, j: str | None, sb: str | None, d: str | None) -> Doc | None:
    """The hash fields j/sb/d as a Doc; None when the memory is absent (expired) or deleted.

    `sb` is authoritative: the Lua sink sets it on the older record when a newer one wins, without
    rewriting the older record's JSON.
    """
    if not j or d:
        return None
    record = orjson.loads(j)
    if sb:
        record["superseded_by"] = sb
    return Doc(memory_id, record, "hotset")


def from_record(record: MemoryRecord, source: Source = "warehouse") -> Doc:
    return Doc(record.memory_id, record.model_dump(mode="json"), source)

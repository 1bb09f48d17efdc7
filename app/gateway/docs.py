"""`Doc`: the read-side view of one canonical record, cheap to build from the hotset's JSON.

Ranking and context assembly run over thousands of these per second, so records stay plain
dicts (orjson) instead of being re-validated as `MemoryRecord` on every read, and what they read
of a record is taken out of the dict once, when the Doc is built. The hotset reader keeps Docs
between requests (reads.py): one built from hotset JSON keeps that string, not the parsed dict,
and parses it again when the whole record is asked for (an answer's few records), so a cached
memory is a couple of objects for the cyclic collector to walk instead of a tree of dicts.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import orjson

from app.models import MemoryRecord
from app.text import estimate_tokens, normalize, term_counts
from sinks.hotset import StoredMemory
from sinks.hotset.layout import CONTEXT_TERMS, RECORD_START

Source = Literal["hotset", "warehouse"]


class Doc:
    __slots__ = (
        "_end",
        "_json",
        "_length",
        "_norm",
        "_record",
        "_start",
        "_terms",
        "_tokens",
        "agent_id",
        "context_terms",
        "deleted",
        "importance",
        "key",
        "memory_id",
        "occurred_at",
        "occurred_ms",
        "session_id",
        "source",
        "status",
        "superseded_by",
        "text",
        "to_agent",
        "type",
        "visibility",
    )

    def __init__(
        self,
        memory_id: str,
        record: dict[str, Any],
        source: Source = "hotset",
        record_json: str | None = None,
        span: tuple[int, int] | None = None,
    ) -> None:
        """`record`: a MemoryRecord as a JSON-mode dict, `superseded_by` already authoritative.
        With `record_json` (what `record` was parsed from) the Doc keeps the string instead; with
        `span`, the JSON is `record_json[start:end]` (the hotset value it came in, which the doc
        cache holds anyway: no copy of the JSON is kept)."""
        self.memory_id = memory_id
        self._record: dict[str, Any] | None = None if record_json is not None else record
        self._json = record_json
        self._start, self._end = span if span is not None else (0, -1)
        self.source: Source = source
        t = record.get("type")
        # Fields that repeat across memories (and terms below) are interned: a cached Doc then
        # shares them with every other Doc instead of holding its own copies.
        self.type: str | None = sys.intern(str(t)) if t is not None else None
        self.key: str | None = record.get("key")
        content = record.get("content")
        content = content if isinstance(content, dict) else {}
        text, status, to_agent = content.get("text"), content.get("status"), content.get("to_agent")
        self.text: str = text if isinstance(text, str) else ""
        self.status: str | None = status if isinstance(status, str) else None
        self.to_agent: str | None = to_agent if isinstance(to_agent, str) else None  # handoffs
        self.session_id: str | None = _intern(record.get("session_id"))
        self.agent_id: str | None = _intern(record.get("agent_id"))
        self.visibility: str = sys.intern(str(record.get("visibility") or "private"))
        imp = record.get("importance")
        self.importance: float | None = float(imp) if isinstance(imp, int | float) else None
        self.superseded_by: str | None = record.get("superseded_by")
        self.deleted: bool = record.get("deleted_at") is not None
        self.occurred_at: datetime = datetime.fromisoformat(str(record["occurred_at"]))
        self.occurred_ms: int = int(self.occurred_at.timestamp() * 1000)
        ctx = record.pop(CONTEXT_TERMS, None) if record_json is None else record.get(CONTEXT_TERMS)
        ctx = ctx if isinstance(ctx, list) else ()
        self.context_terms: tuple[str, ...] = tuple(sys.intern(t) for t in ctx if isinstance(t, str))
        self._norm: str | None = None
        self._tokens = 0
        self._terms: dict[str, int] | None = None
        self._length = 0

    @property
    def record(self) -> dict[str, Any]:
        """The whole record (a fresh dict when built from JSON: callers may change it)."""
        if self._record is not None:
            return self._record
        assert self._json is not None
        raw = self._json if self._end < 0 else self._json[self._start : self._end]
        record: dict[str, Any] = orjson.loads(raw)
        record.pop(CONTEXT_TERMS, None)  # an index field of the hotset's copy, not of the record
        if self.superseded_by:
            record["superseded_by"] = self.superseded_by
        return record

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Doc):
            return NotImplemented
        return (self.memory_id, self.source, self.record) == (other.memory_id, other.source, other.record)

    __hash__ = None  # type: ignore[assignment]  # equal by value, and the record is a dict

    def __repr__(self) -> str:
        return f"Doc({self.memory_id!r}, source={self.source!r})"

    @property
    def content(self) -> dict[str, Any]:
        c = self.record.get("content")
        return c if isinstance(c, dict) else {}

    @property
    def normalized_text(self) -> str:
        """The text as dedupe compares it (app.text.normalize)."""
        if self._norm is None:
            self._norm = normalize(self.text)
        return self._norm

    @property
    def tokens(self) -> int:
        """Token estimate of the text (app.text.estimate_tokens)."""
        if not self._tokens:
            self._tokens = estimate_tokens(self.text)
        return self._tokens

    def may_hold(self, terms: Sequence[str]) -> bool:
        """False only when none of `terms` can be among `term_counts`, decided without tokenizing:
        an ASCII text's terms are substrings of its lower-cased form. (Hybrid search scores many
        vector candidates that hold no query word; tokenizing each was most of its BM25 cost.)"""
        if self._terms is not None:
            return any(t in self._terms for t in terms)
        text = f"{self.key or ''} {self.text}"
        if not text.isascii():
            return True  # NFKC and bigrams: only the tokenizer knows
        low = text.lower()
        return any(t in low or t in self.context_terms for t in terms)

    @property
    def term_counts(self) -> dict[str, int]:
        """Indexed terms of key and text with their frequencies (and the context terms, once each),
        as BM25 reads them. A plain dict
        of atoms: the cyclic collector stops tracking it (a Counter it would walk forever)."""
        if self._terms is None:
            terms = {sys.intern(t): n for t, n in term_counts(f"{self.key or ''} {self.text}").items()}
            for t in self.context_terms:  # a conversation turn's terms from the turn before it
                terms.setdefault(t, 1)
            self._terms = terms
            self._length = sum(terms.values())
        return self._terms

    @property
    def length(self) -> int:
        """Occurrences of indexed terms (BM25's document length): the sum of `term_counts`."""
        if self._terms is None:
            self.term_counts  # noqa: B018  # computes the length with the terms
        return self._length


def _intern(value: Any) -> Any:
    """An optional string field, interned when it is a string."""
    return sys.intern(value) if type(value) is str else value


@dataclass(frozen=True)
class Slot:
    """What the hotset holds for one memory id: a version (None: nothing of ours) and its Doc
    (None for a tombstone)."""

    version: str | None
    doc: Doc | None
    deleted: bool

    @property
    def present(self) -> bool:
        return self.version is not None


ABSENT = Slot(None, None, False)


def from_hotset(memory_id: str, stored: StoredMemory, value: str | None = None) -> Doc | None:
    """A hotset value as a Doc; None for a tombstone. With `value` (what `stored` was decoded
    from), the Doc keeps the value and where its record JSON lies instead of a copy of the JSON.

    The stored `superseded_by` is authoritative: the Lua sink sets it on the older memory when a
    newer one wins, without rewriting the older record's JSON.
    """
    if stored.deleted or not stored.record_json:
        return None
    record = orjson.loads(stored.record_json)
    if stored.superseded_by:
        record["superseded_by"] = stored.superseded_by
    end = RECORD_START + len(stored.record_json)
    if value is not None and value.startswith(stored.record_json, RECORD_START):
        return Doc(memory_id, record, "hotset", value, (RECORD_START, end))
    return Doc(memory_id, record, "hotset", stored.record_json)


def from_record(record: MemoryRecord, source: Source = "warehouse") -> Doc:
    return Doc(record.memory_id, record.model_dump(mode="json"), source)

"""Context assembly for an agent turn, as a pure function over already-fetched docs.

Sections, in prompt order and in budget priority (a short budget is given to the first ones
first; the last ones give way): identity, rules, decisions, tasks, summary, recent.

Scope: an unscoped memory (no session, no agent) applies to every context call of its tenant;
an agent-scoped one (agent, no session) to calls for that agent; a session-scoped one to calls
for that session, whichever agent asks. Identity, rules, decisions and tasks are the active
memories of their keys in scope (every one of them, newest first, while the budget lasts; tasks
only while open, in progress or blocked); the summary is the newest summary of the session (or,
without a session, the agent's newest, else the newest unscoped one), left out while stale (a
memory it cites was deleted or superseded since); recent is the session's (or agent's) newest
events, presented oldest first. An agent-scoped caller gets only what it may read
(app.auth.scope.may_read), whatever the scope asked for.

Tokens are counted per item text as ceil(UTF-8 bytes / 4) (app.text.estimate_tokens).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, NamedTuple

from app.auth.scope import may_read
from app.gateway.docs import Doc, Slot
from app.gateway.visibility import allowed
from app.models import Visibility

Section = Literal["identity", "rules", "decisions", "tasks", "summary", "recent"]
SECTIONS: tuple[Section, ...] = ("identity", "rules", "decisions", "tasks", "summary", "recent")
# Standing knowledge: every active memory in scope is a candidate (read page by page).
STANDING: tuple[Section, ...] = ("identity", "rules", "decisions", "tasks")
# Windows of the recency-ordered sections.
SUMMARY_FETCH = 3
RECENT_FETCH = 60
CAP: Mapping[Section, int | None] = {
    "identity": None,
    "rules": None,
    "decisions": None,
    "tasks": None,
    "summary": 1,
    "recent": 50,
}
SECTION_TYPE: Mapping[Section, str | None] = {
    "identity": "identity",
    "rules": "rule",
    "decisions": "decision",
    "tasks": "task",
    "summary": "summary",
    "recent": None,
}
TOKEN_COUNTING = "ceil(utf8_bytes(text) / 4) per item"
_TASK_ORDER = {"in_progress": 0, "blocked": 1, "open": 2}
_RECENT_SKIP = frozenset({"identity", "rule", "decision", "task", "summary"})


class ContextItem(NamedTuple):  # a tuple: built for every item of every turn
    memory_id: str
    section: Section
    type: str | None
    key: str | None
    text: str
    status: str | None
    agent_id: str | None
    occurred_at: datetime
    tokens: int


@dataclass(frozen=True)
class Context:
    items: list[ContextItem]
    used_tokens: int
    omitted: dict[Section, int]
    # Sections whose index holds more than was fetched while the budget still had room: the
    # adapter reads their next page and assembles again.
    starved: frozenset[Section] = field(default_factory=frozenset)


def in_scope(doc: Doc, session_id: str | None, agent_id: str | None) -> bool:
    """The scope rule of standing knowledge (module docstring)."""
    if doc.session_id is not None:
        return doc.session_id == session_id
    if doc.agent_id is not None:
        return doc.agent_id == agent_id
    return True


def _summary_in_scope(doc: Doc, session_id: str | None, agent_id: str | None) -> bool:
    if session_id is not None:
        return doc.session_id == session_id  # the session's summary, whoever wrote it
    if doc.agent_id is not None:
        return doc.agent_id == agent_id
    return doc.session_id is None


def _eligible(
    doc: Doc,
    section: Section,
    session_id: str | None,
    agent_id: str | None,
    vis: frozenset[str],
    reader_agent: str | None = None,
) -> bool:
    if doc.deleted or doc.superseded_by is not None or doc.visibility not in vis or not doc.text:
        return False
    if reader_agent is not None and not may_read(reader_agent, doc.agent_id, doc.type, doc.to_agent):
        return False
    want = SECTION_TYPE[section]
    if want is not None and doc.type != want:
        return False
    if section == "recent":
        # Standing knowledge has its own sections; the transcript is the session's events.
        return doc.type not in _RECENT_SKIP and (session_id is None or doc.session_id == session_id)
    if section == "summary":
        return _summary_in_scope(doc, session_id, agent_id)
    if section == "tasks" and doc.status == "done":
        return False
    return in_scope(doc, session_id, agent_id)


def _order(section: Section, docs: list[Doc]) -> list[Doc]:
    newest = sorted(docs, key=lambda d: (d.occurred_ms, d.memory_id), reverse=True)
    if section == "tasks":
        return sorted(newest, key=lambda d: _TASK_ORDER.get(d.status or "open", 3))
    return newest


def summary_staleness(doc: Doc, cited: Mapping[str, Slot]) -> str | None:
    """Why a summary no longer matches what it cites, or None. `cited`: the hotset slots of its
    citations (a citation missing from `cited` or absent from the hotset expired: not stale)."""
    citations = doc.record.get("citations") or []
    for mid in citations:
        slot = cited.get(mid)
        if slot is None or not slot.present:
            continue
        if slot.deleted:
            return f"cited memory {mid} was deleted"
        if slot.doc is not None and slot.doc.superseded_by is not None:
            return f"cited memory {mid} was superseded by {slot.doc.superseded_by}"
    return None


@dataclass
class Packing:
    """The budget as sections spend it, in prompt order. The standing sections come first, so
    their packing depends only on standing knowledge and the budget: a gateway caches it (keyed
    by the tenant's standing generation) and packs only summary and recent on top of a copy."""

    budget_tokens: int
    used: int = 0
    chosen: dict[Section, list[ContextItem]] = field(default_factory=lambda: {s: [] for s in SECTIONS})
    omitted: dict[Section, int] = field(default_factory=lambda: dict.fromkeys(SECTIONS, 0))
    starved: set[Section] = field(default_factory=set)
    seen_ids: set[str] = field(default_factory=set)
    seen_text: set[str] = field(default_factory=set)

    def copy(self) -> Packing:
        return Packing(
            self.budget_tokens,
            self.used,
            {s: list(items) for s, items in self.chosen.items()},
            dict(self.omitted),
            set(self.starved),
            set(self.seen_ids),
            set(self.seen_text),
        )

    def context(self) -> Context:
        recent = self.chosen["recent"][::-1]  # chosen newest first, presented oldest first
        items = [i for s in SECTIONS for i in (recent if s == "recent" else self.chosen[s])]
        return Context(items, self.used, dict(self.omitted), frozenset(self.starved))


StandingKey = tuple[str, str | None, str | None, str | None, str | None, int]  # see StandingCache


class StandingCache:
    """Packed standing sections per (tenant, session, agent, channel visibility, reader agent,
    budget), each with the tenant's standing generation it was read at; least recently used
    first out. A packing is only ever used at the generation it was read at."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[StandingKey, tuple[str, Packing]] = OrderedDict()

    def get(self, key: StandingKey) -> tuple[str, Packing] | None:
        hit = self._entries.get(key)
        if hit is not None:
            self._entries.move_to_end(key)
        return hit

    def put(self, key: StandingKey, generation: str, packing: Packing) -> None:
        if self.size <= 0:
            return
        self._entries[key] = (generation, packing)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


def pack(
    candidates: Mapping[Section, Sequence[Doc | None]],
    budget_tokens: int,
    session_id: str | None = None,
    agent_id: str | None = None,
    channel_visibility: Visibility | None = None,
    totals: Mapping[Section, int] | None = None,
    stale: Mapping[str, str] | None = None,
    reader_agent: str | None = None,
    sections: Sequence[Section] = SECTIONS,
    start: Packing | None = None,
) -> Packing:
    """Pack `sections` (in prompt order) on top of `start` (updated in place; a new packing when
    None). Arguments as `assemble`."""
    vis = allowed(channel_visibility)
    totals = totals or {}
    stale = stale or {}
    out = start if start is not None else Packing(budget_tokens)
    seen_ids, seen_text, omitted = out.seen_ids, out.seen_text, out.omitted
    for section in sections:
        fetched = candidates.get(section, ())
        docs = [d for d in fetched if d is not None and _eligible(d, section, session_id, agent_id, vis, reader_agent)]
        ordered = _order(section, docs)
        if section == "summary" and ordered:
            ordered = ordered[:1]  # the newest only: a stale one is not replaced by an older one
            if ordered[0].memory_id in stale:
                omitted[section] += 1
                continue
        taken = 0
        cap = CAP[section]
        chosen = out.chosen[section]
        for doc in ordered:
            norm = doc.normalized_text
            if doc.memory_id in seen_ids or norm in seen_text:
                continue  # deduplicated: the same memory or the same words already in context
            cost = doc.tokens
            if (cap is not None and taken >= cap) or out.used + cost > budget_tokens:
                omitted[section] += 1
                continue  # a smaller item further down may still fit (it is not read for)
            seen_ids.add(doc.memory_id)
            seen_text.add(norm)
            out.used += cost
            taken += 1
            chosen.append(_item(doc, section, cost))
        unread = max(0, totals.get(section, 0) - len(fetched)) if section in STANDING else 0
        # Read further only while everything read so far fitted: the next page is older.
        if unread and not omitted[section] and out.used < budget_tokens:
            out.starved.add(section)
        omitted[section] += unread
    return out


def assemble(
    candidates: Mapping[Section, Sequence[Doc | None]],
    budget_tokens: int,
    session_id: str | None = None,
    agent_id: str | None = None,
    channel_visibility: Visibility | None = None,
    totals: Mapping[Section, int] | None = None,
    stale: Mapping[str, str] | None = None,
    reader_agent: str | None = None,
) -> Context:
    """`candidates`: per section, what was read of its indexes (None: an entry with no memory);
    `totals`: per standing section, how many entries its indexes hold in all (entries not read
    count as omitted); `stale`: summary id -> why it is stale; `reader_agent`: the agent an
    agent-scoped caller is bound to (app.auth.scope.may_read: what it may not read is left out
    before the budget is spent)."""
    return pack(
        candidates, budget_tokens, session_id, agent_id, channel_visibility, totals, stale, reader_agent
    ).context()


def _item(doc: Doc, section: Section, cost: int) -> ContextItem:
    return ContextItem(
        memory_id=doc.memory_id,
        section=section,
        type=doc.type,
        key=doc.key,
        text=doc.text,
        status=doc.status,
        agent_id=doc.agent_id,
        occurred_at=doc.occurred_at,
        tokens=cost,
    )

"""Context assembly for an agent turn, as a pure function over already-fetched docs.

Order for a prompt: identity, rules, active decisions, open tasks, the latest session summary,
then the session's recent events oldest first (so the transcript reads forward). Priority for the
budget is the same order: recent events fill what is left, newest first.
Tokens are counted per item text as ceil(UTF-8 bytes / 4) (app.text.estimate_tokens).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, NamedTuple

from app.auth.scope import may_read
from app.gateway.docs import Doc
from app.gateway.visibility import allowed
from app.models import Visibility

Section = Literal["identity", "rules", "decisions", "tasks", "summary", "recent"]
SECTIONS: tuple[Section, ...] = ("identity", "rules", "decisions", "tasks", "summary", "recent")
# How many candidates each section reads from its recency index (bounded work per turn).
FETCH: Mapping[Section, int] = {
    "identity": 10,
    "rules": 30,
    "decisions": 30,
    "tasks": 40,
    "summary": 20,
    "recent": 60,
}
# How many items each section may contribute at most.
CAP: Mapping[Section, int] = {
    "identity": 5,
    "rules": 20,
    "decisions": 20,
    "tasks": 20,
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
    omitted: int


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
    if section == "summary" and session_id is not None:
        return doc.session_id == session_id  # the session's summary, whoever wrote it
    # identity, rules, decisions, tasks (and, without a session, summaries): tenant-wide, or this agent's.
    if section == "tasks" and doc.status == "done":
        return False
    return agent_id is None or doc.agent_id is None or doc.agent_id == agent_id


def _order(section: Section, docs: list[Doc]) -> list[Doc]:
    newest = sorted(docs, key=lambda d: d.occurred_ms, reverse=True)
    if section == "tasks":
        return sorted(newest, key=lambda d: _TASK_ORDER.get(d.status or "open", 3))
    return newest


def assemble(
    candidates: Mapping[Section, Sequence[Doc | None]],
    budget_tokens: int,
    session_id: str | None = None,
    agent_id: str | None = None,
    channel_visibility: Visibility | None = None,
    reader_agent: str | None = None,
) -> Context:
    """`reader_agent`: the agent an agent-scoped caller is bound to (app.auth.scope.may_read)."""
    vis = allowed(channel_visibility)
    seen_ids: set[str] = set()
    seen_text: set[str] = set()
    chosen: dict[Section, list[ContextItem]] = {s: [] for s in SECTIONS}
    used = 0
    omitted = 0
    for section in SECTIONS:
        docs = [
            d
            for d in candidates.get(section, ())
            if d is not None and _eligible(d, section, session_id, agent_id, vis, reader_agent)
        ]
        taken = 0
        for doc in _order(section, docs):
            norm = doc.normalized_text
            if doc.memory_id in seen_ids or norm in seen_text:
                continue  # deduplicated: the same memory or the same words already in context
            if taken >= CAP[section]:
                break
            cost = doc.tokens
            if used + cost > budget_tokens:
                omitted += 1
                continue  # a smaller item further down may still fit
            seen_ids.add(doc.memory_id)
            seen_text.add(norm)
            used += cost
            taken += 1
            chosen[section].append(_item(doc, section, cost))
    chosen["recent"].reverse()  # chosen newest first, presented oldest first
    return Context([i for s in SECTIONS for i in chosen[s]], used, omitted)


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

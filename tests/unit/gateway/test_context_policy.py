"""Pure parts of issue 12: context assembly at size, summary staleness, the drift guard, the
clock-skew guard and supersession planning."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from app.gateway import context
from app.gateway.docs import ABSENT, Doc, Slot
from app.models import MemoryEvent, SourcePosition
from app.pipeline import citation_problem, future_skew, plan, prepare
from sinks.hotset.state import HotsetState

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def doc(mid: str, text: str, at: datetime = NOW, **rec: Any) -> Doc:
    record: dict[str, Any] = {
        "memory_id": mid,
        "type": "event",
        "content": {"text": text},
        "visibility": "private",
        "occurred_at": at.isoformat(),
        "deleted_at": None,
        "superseded_by": None,
    }
    if "status" in rec:
        record["content"]["status"] = rec.pop("status")
    record.update(rec)
    return Doc(mid, record)


def test_every_active_rule_and_decision_fits_when_the_budget_has_room() -> None:
    # The measured case: one rule and one decision first, then 60 decisions and 30 rules.
    rules = [doc("r0", "always answer in formal English", NOW, type="rule", key="tone")]
    rules += [doc(f"r{i}", f"rule number {i}", NOW + timedelta(minutes=i), type="rule") for i in range(1, 31)]
    decisions = [doc("d0", "use Snowflake", NOW, type="decision", key="db")]
    decisions += [
        doc(f"d{i}", f"decision number {i}", NOW + timedelta(minutes=i), type="decision") for i in range(1, 61)
    ]
    ctx = context.assemble({"rules": rules, "decisions": decisions}, 4000, totals={"rules": 31, "decisions": 61})
    ids = {i.memory_id for i in ctx.items}
    assert {"r0", "d0"} <= ids and len(ctx.items) == 92
    assert sum(ctx.omitted.values()) == 0 and not ctx.starved


def test_sections_give_way_from_the_last_and_omitted_counts_each() -> None:
    cands: dict[context.Section, list[Doc | None]] = {
        # identity: 5 tokens; rules: 10 tokens each
        "identity": [doc("i", "I am the build agent", type="identity")],
        "rules": [doc(f"r{i}", f"{i}" + "x" * 39, NOW + timedelta(seconds=i), type="rule") for i in range(5)],
        "recent": [doc(f"e{i}", f"event number {i} happened", session_id="s") for i in range(3)],
    }
    ctx = context.assemble(cands, 30, session_id="s", totals={"identity": 1, "rules": 8})
    assert [i.section for i in ctx.items] == ["identity", "rules", "rules"]
    # newest rules first; 3 fetched rules did not fit and 3 were never read; every event gave way
    assert [i.memory_id for i in ctx.items[1:]] == ["r4", "r3"]
    assert ctx.omitted == {"identity": 0, "rules": 6, "decisions": 0, "tasks": 0, "summary": 0, "recent": 3}
    assert not ctx.starved  # the budget is spent: no need to read further


def test_a_section_with_unread_entries_and_budget_left_is_starved() -> None:
    ctx = context.assemble({"decisions": [doc("d", "one", type="decision")]}, 1000, totals={"decisions": 300})
    assert ctx.starved == {"decisions"} and ctx.omitted["decisions"] == 299


def test_scope_unscoped_agent_and_session() -> None:
    rules = [
        doc("all", "everyone", type="rule"),
        doc("a1", "agent one", type="rule", agent_id="a1"),
        doc("s1", "session one", type="rule", session_id="s1", agent_id="a2"),
    ]
    got = {i.memory_id for i in context.assemble({"rules": rules}, 100, agent_id="a1").items}
    assert got == {"all", "a1"}
    got = {i.memory_id for i in context.assemble({"rules": rules}, 100, session_id="s1", agent_id="a1").items}
    assert got == {"all", "a1", "s1"}  # session-scoped: for that session, whichever agent asks
    assert {i.memory_id for i in context.assemble({"rules": rules}, 100).items} == {"all"}


def test_a_stale_newest_summary_is_left_out_not_replaced_by_an_older_one() -> None:
    new = doc("new", "newest summary", NOW, type="summary", session_id="s", citations=["m1"])
    old = doc("old", "older summary", NOW - timedelta(hours=1), type="summary", session_id="s")
    ctx = context.assemble({"summary": [old, new]}, 100, session_id="s", stale={"new": "cited memory m1 was deleted"})
    assert ctx.items == [] and ctx.omitted["summary"] == 1
    ctx = context.assemble({"summary": [old, new]}, 100, session_id="s")
    assert [i.memory_id for i in ctx.items] == ["new"]


def test_summary_staleness_reasons() -> None:
    summary = doc("s", "sum", type="summary", citations=["gone", "old", "live", "expired"])
    live = doc("live", "x")
    old = doc("old", "x", superseded_by="newer")
    V = "0" * 32
    assert context.summary_staleness(summary, {"live": Slot(V, live, False), "expired": ABSENT}) is None
    reason = context.summary_staleness(summary, {"old": Slot(V, old, False)})
    assert reason == "cited memory old was superseded by newer"
    assert context.summary_staleness(summary, {"gone": Slot(V, None, True)}) == "cited memory gone was deleted"


def event(**over: Any) -> MemoryEvent:
    data: dict[str, Any] = {
        "schema_version": 1,
        "event_id": "e1",
        "tenant_id": "t",
        "type": "summary",
        "content": {"text": "they agreed"},
        "citations": ["m-a"],
        "occurred_at": NOW.isoformat(),
    }
    data.update(over)
    return MemoryEvent.model_validate(data)


def test_future_skew() -> None:
    ms = int(NOW.timestamp() * 1000)
    assert future_skew(event(), ms, 300) is None
    assert future_skew(event(occurred_at=(NOW + timedelta(seconds=299)).isoformat()), ms, 300) is None
    reason = future_skew(event(occurred_at=(NOW + timedelta(days=365)).isoformat()), ms, 300)
    assert reason is not None and "ahead of the message timestamp" in reason
    assert future_skew(event(occurred_at=(NOW + timedelta(days=365)).isoformat()), None, 300) is None


def _plan(events: list[MemoryEvent], state: HotsetState) -> list[Any]:
    return plan([prepare(e, SourcePosition(topic="x", partition=0, offset=i)) for i, e in enumerate(events)], state, 0)


def test_drift_guard_in_the_planner() -> None:
    rec = prepare(event(), SourcePosition(topic="x", partition=0, offset=0)).record
    state = HotsetState(memories={("t", "m-a"): "live"})
    assert citation_problem(rec, state) is None
    assert "not found" in (citation_problem(rec, HotsetState()) or "")
    assert "deleted" in (citation_problem(rec, HotsetState(memories={("t", "m-a"): "deleted"})) or "")
    # another tenant's memory of the same id is not this tenant's
    assert citation_problem(rec, HotsetState(memories={("u", "m-a"): "live"})) is not None

    # a memory written (or deleted) earlier in the same batch counts
    cited = event(event_id="e0", memory_id="m-a", type="event", citations=None)
    intents = _plan([cited, event()], HotsetState())
    assert [i.kind for i in intents] == ["write", "write"]
    delete = event(event_id="e2", op="delete", memory_id="m-a", type=None, content=None, citations=None)
    intents = _plan([delete, event()], HotsetState(memories={("t", "m-a"): "live"}))
    assert [i.kind for i in intents] == ["delete", "refused"]
    assert intents[1].reason and "deleted: m-a" in intents[1].reason
    assert intents[1].counters == {"refused_citations": 1} and not intents[1].publishes


def test_a_refused_summary_does_not_shadow_a_later_valid_one() -> None:
    # a refused summary is not deduplicated against: the same text later with valid citations is written
    intents = _plan([event(), event(event_id="e9")], HotsetState(memories={}))
    assert [i.kind for i in intents] == ["refused", "refused"]
    intents = _plan([event(event_id="e10")], HotsetState(memories={("t", "m-a"): "live"}))
    assert [i.kind for i in intents] == ["write"] and Counter(intents[0].counters)["writes"] == 1

"""Contextual indexing as pure functions: the terms a conversation turn borrows from the turn
before it, how the planner carries that turn, and what the hotset copy and the gateway make of it."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from app.gateway.docs import from_hotset
from app.models import MemoryRecord, MemoryType
from app.pipeline import plan
from app.rebuild import restore_intent, with_previous_turns
from app.text import MAX_TERMS_PER_DOC, contextual_terms, index_terms
from sinks.hotset import HotsetState, TurnNeighbours, layout
from tests.unit.app.test_pipeline import msg, prep


def test_contextual_terms_are_the_previous_turns_that_the_turn_lacks_within_the_cap() -> None:
    own = index_terms("Yes, let's do that launch")
    assert contextual_terms(own, "Shall we move the launch to Friday?") == ("shall", "move", "friday")
    assert contextual_terms(own, "") == ()
    full = [f"w{i}" for i in range(MAX_TERMS_PER_DOC - 1)]
    assert contextual_terms(full, "launch friday") == ("launch",)


def test_plan_indexes_a_turn_with_the_previous_turn_of_its_session() -> None:
    q = prep(msg(content={"text": "Shall we move the launch to Friday?"}))
    other = prep(msg(session_id="s2", content={"text": "Sounds good"}))
    a = prep(msg(content={"text": "Yes, let's do that."}))
    decision = prep(msg(type="decision", key="k", content={"text": "use postgres"}))
    state = HotsetState(previous_turn={("acme", "s2"): ("budget for the offsite dinner", "private")})
    intents = {i.record.memory_id: i for i in plan([q, other, a, decision], state, 3600)}
    assert intents[q.record.memory_id].context_terms == ()
    assert intents[other.record.memory_id].context_terms == ("budget", "offsite", "dinner")
    reply = intents[a.record.memory_id]
    assert reply.context_terms == ("shall", "move", "launch", "friday")
    assert set(reply.context_terms) <= set(reply.terms) and "yes" in reply.terms
    assert intents[decision.record.memory_id].context_terms == ()  # decisions are not turns
    assert state.previous_turn[("acme", "s1")] == ("Yes, let's do that.", "private")
    # A public turn after a private one borrows nothing from it.
    public = prep(msg(content={"text": "Noted."}, channel={"id": "general", "visibility": "public"}))
    [intent] = plan([public], HotsetState(previous_turn={("acme", "s1"): ("the launch", "private")}), 3600)
    assert intent.context_terms == ()


def test_a_turn_with_a_key_lends_the_words_of_its_text_only() -> None:
    keyed = prep(msg(key="launch-plan", content={"text": "Shall we move it to Friday?"}))
    reply = prep(msg(content={"text": "Yes"}))
    again = prep(msg(content={"text": "Agreed"}))
    intents = plan([keyed, reply, again], HotsetState(), 3600)
    assert "launch-plan" in intents[0].terms
    assert intents[1].context_terms == ("shall", "move", "friday")
    assert intents[2].context_terms == ("yes",)


def test_hotset_copy_carries_the_terms_and_readers_drop_them() -> None:
    a = prep(msg(content={"text": "Yes, let's do that."}))
    [intent] = plan([a], HotsetState(previous_turn={("acme", "s1"): ("move the launch", "private")}), 3600)
    stored_json = layout.with_context(intent.record_json.decode(), intent.context_terms)
    assert orjson.loads(stored_json)[layout.CONTEXT_TERMS] == ["move", "launch"]
    value = layout.encode(intent.record.version, stored_json)
    assert layout.stored_text(value) == ("Yes, let's do that.", "private")
    assert layout.stored_text(layout.encode(intent.record.version, stored_json, deleted=True)) == ("", "")
    stored = layout.decode(value)
    assert stored is not None
    doc = from_hotset(a.record.memory_id, stored)
    assert doc is not None and doc.term_counts["launch"] == 1 and doc.term_counts["yes"] == 1
    assert layout.CONTEXT_TERMS not in doc.record
    MemoryRecord.model_validate(doc.record)  # the record as memory.records holds it


def test_rebuild_pairs_each_turn_with_its_sessions_previous_memory() -> None:
    recs = [
        prep(msg(content={"text": "second"}, occurred_at="2026-01-01T00:00:02Z")).record,
        prep(msg(content={"text": "first"}, occurred_at="2026-01-01T00:00:01Z")).record,
        prep(msg(session_id="s2", content={"text": "elsewhere"}, occurred_at="2026-01-01T00:00:03Z")).record,
        prep(
            msg(
                content={"text": "public"},
                occurred_at="2026-01-01T00:00:04Z",
                channel={"id": "general", "visibility": "public"},
            )
        ).record,
    ]
    pairs = [(r.content["text"], prev) for r, prev in with_previous_turns(recs)]  # type: ignore[index]
    assert pairs == [("first", ""), ("second", "first"), ("public", ""), ("elsewhere", "")]
    now = datetime(2026, 1, 1, tzinfo=UTC)
    intent = restore_intent(recs[0], 86400, now, previous_text="the launch", reindex=True)
    assert intent is not None and intent.kind == "reindex" and intent.context_terms == ("launch",)
    assert recs[0].type is MemoryType.EVENT


def test_a_forgotten_turn_takes_its_words_out_of_the_next_turns_index() -> None:
    before = "budget for the offsite dinner"
    gone = prep(msg(content={"text": "Shall we move the launch to Friday?"})).record
    reply = prep(msg(content={"text": "Yes, let's do that launch."})).record
    lent = contextual_terms(index_terms("Yes, let's do that launch."), gone.content["text"])  # type: ignore[index]
    assert lent == ("shall", "move", "friday")
    state = HotsetState(
        stored={("acme", gone.memory_id): gone},
        stored_context={("acme", gone.memory_id): ("offsite",)},
        neighbours={("acme", gone.memory_id): TurnNeighbours(reply, lent, before, "private")},
        previous_turn={("acme", "s1"): ("Shall we move the launch to Friday?", "private")},
    )
    delete = prep(msg(op="delete", memory_id=gone.memory_id, content=None, occurred_at="2026-01-01T00:00:09Z"))
    forget, reindex = plan([delete], state, 3600)
    assert forget.kind == "delete" and "offsite" in forget.terms and "friday" in forget.terms
    assert reindex.kind == "reindex" and reindex.record.memory_id == reply.memory_id
    assert reindex.context_terms == ("budget", "offsite", "dinner")  # the turn before lends instead
    assert set(reindex.drop_terms) == {"shall", "move", "friday"}
    assert not set(reindex.drop_terms) & set(reindex.terms)
    # The next turn written after the delete borrows from the turn before the forgotten one.
    assert state.previous_turn[("acme", "s1")] == (before, "private")


def test_a_forgotten_turn_the_next_turn_did_not_borrow_from_reindexes_nothing() -> None:
    gone = prep(msg(content={"text": "Shall we move the launch to Friday?"})).record
    reply = prep(msg(content={"text": "Yes"})).record
    state = HotsetState(
        stored={("acme", gone.memory_id): gone},
        neighbours={("acme", gone.memory_id): TurnNeighbours(reply, ("budget",), "budget", "private")},
    )
    delete = prep(msg(op="delete", memory_id=gone.memory_id, content=None, occurred_at="2026-01-01T00:00:09Z"))
    assert [i.kind for i in plan([delete], state, 3600)] == ["delete"]
    decision = prep(msg(type="decision", key="k", content={"text": "Friday"})).record
    state = HotsetState(stored={("acme", decision.memory_id): decision})
    delete = prep(msg(op="delete", memory_id=decision.memory_id, content=None, occurred_at="2026-01-01T00:00:09Z"))
    assert [i.kind for i in plan([delete], state, 3600)] == ["delete"]  # not a turn

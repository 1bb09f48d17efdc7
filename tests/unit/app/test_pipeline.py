"""The ingest policies as pure functions: no services needed."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from app.models import DeadLetter, MemoryEvent, MemoryRecord
from app.pipeline import Incoming, Prepared, carried_state, plan, prepare, validate
from sinks.hotset import HotsetState

N = 0


def msg(offset: int | None = None, **over: Any) -> Incoming:
    global N
    N += 1
    body: dict[str, Any] = {
        "schema_version": 1,
        "event_id": f"e{N}",
        "tenant_id": "acme",
        "type": "event",
        "session_id": "s1",
        "content": {"text": f"message {N}"},
        "occurred_at": "2026-01-01T00:00:00Z",
    }
    body.update(over)
    return Incoming(orjson.dumps(body), "memory.events", 0, N if offset is None else offset)


def prep(m: Incoming) -> Prepared:
    event = validate(m)
    assert isinstance(event, MemoryEvent), event
    return prepare(event, m.position)


def test_invalid_json_becomes_dead_letter_with_source() -> None:
    m = Incoming(b"{not json", "memory.events", 2, 41)
    dl = validate(m)
    assert isinstance(dl, DeadLetter)
    assert dl.stage == "validate" and dl.source is not None and dl.source.offset == 41
    import base64

    assert base64.b64decode(dl.original_b64) == b"{not json"


def test_dead_letter_keeps_tenant_when_known() -> None:
    dl = validate(msg(type="bogus"))
    assert isinstance(dl, DeadLetter) and dl.tenant_id == "acme" and "type" in dl.reason


def test_redaction_counts_not_values() -> None:
    p = prep(msg(content={"text": "my key AKIAIOSFODNN7EXAMPLE"}, metadata={"note": "password=hunter22"}))
    assert p.record.content == {"text": "my key [REDACTED:aws_access_key]"}
    assert p.record.metadata["note"] == "password=[REDACTED:credential_assignment]"
    assert p.record.metadata["redactions"] == {"aws_access_key": 1, "credential_assignment": 1}
    assert "AKIA" not in p.record.to_json().decode() and "hunter22" not in p.record.to_json().decode()
    [intent] = plan([p], HotsetState(), 3600)
    assert intent.counters["redacted:aws_access_key"] == 1


def test_privacy_do_not_remember_is_dropped_and_counted() -> None:
    p = prep(msg(remember=False))
    [intent] = plan([p], HotsetState(), 3600)
    assert intent.kind == "dropped" and intent.counters["privacy_dropped"] == 1 and not intent.publishes


def test_visibility_comes_from_channel() -> None:
    assert prep(msg()).record.visibility == "private"
    assert prep(msg(channel={"id": "general", "visibility": "public"})).record.visibility == "public"


def test_dedupe_within_window_same_scope() -> None:
    a = prep(msg(content={"text": "Deploy  at NOON"}))
    b = prep(msg(content={"text": "deploy at noon"}, occurred_at="2026-01-01T00:30:00Z"))
    c = prep(msg(content={"text": "deploy at noon"}, occurred_at="2026-01-01T03:00:00Z"))
    other_session = prep(msg(content={"text": "deploy at noon"}, session_id="s2"))
    kinds = [i.kind for i in plan([a, b, c, other_session], HotsetState(), 3600)]
    assert kinds == ["write", "duplicate", "write", "write"]


def test_a_task_status_change_with_the_same_text_is_not_a_duplicate() -> None:
    def task(status: str, minute: int) -> Prepared:
        when = f"2026-01-01T00:{minute:02d}:00Z"
        return prep(msg(type="task", key="docs", content={"text": "task docs", "status": status}, occurred_at=when))

    intents = plan([task("open", 0), task("done", 10), task("done", 20)], HotsetState(), 3600)
    assert [i.kind for i in intents] == ["write", "write", "duplicate"]
    assert intents[1].supersedes == intents[0].record.memory_id


def test_handoffs_with_the_same_text_are_separate_packets() -> None:
    def handoff(to: str) -> Prepared:
        return prep(msg(type="handoff", content={"text": "review PR 42", "to_agent": to, "task": "review PR 42"}))

    kinds = [i.kind for i in plan([handoff("bob"), handoff("carol"), handoff("bob")], HotsetState(), 3600)]
    assert kinds == ["write", "write", "write"]


def test_replayed_event_is_not_a_duplicate_of_itself() -> None:
    m = msg(content={"text": "same"})
    state = HotsetState()
    first = plan([prep(m)], state, 3600)
    state.seen.clear()  # the event ledger expired; the dedupe entry still points at this memory
    again = plan([prep(m)], state, 3600)
    assert [i.kind for i in first + again] == ["write", "write"]
    assert first[0].record == again[0].record


def test_supersession_newest_occurred_at_wins_even_out_of_order() -> None:
    newer = prep(msg(type="decision", key="db", content={"text": "use snowflake"}, occurred_at="2026-01-03T00:00:00Z"))
    older = prep(msg(type="decision", key="db", content={"text": "use postgres"}, occurred_at="2026-01-02T00:00:00Z"))
    state = HotsetState()
    i_new, i_old = plan([newer, older], state, 3600)
    assert i_new.active_value is not None and i_new.supersedes is None
    assert i_old.record.superseded_by == newer.record.memory_id
    assert i_old.active_value is None
    assert state.active[("acme", "decision\x1fdb")].memory_id == newer.record.memory_id


def test_supersession_in_order_marks_previous() -> None:
    first = prep(msg(type="rule", key="tone", content={"text": "be formal"}))
    second = prep(msg(type="rule", key="tone", content={"text": "be casual"}, occurred_at="2026-01-05T00:00:00Z"))
    _, i2 = plan([first, second], HotsetState(), 3600)
    assert i2.supersedes == first.record.memory_id and i2.counters["superseded"] == 1


def test_same_timestamp_later_offset_wins() -> None:
    a = prep(msg(offset=10, type="identity", key="name", content={"text": "Ada"}))
    b = prep(msg(offset=11, type="identity", key="name", content={"text": "Grace"}))
    _, ib = plan([a, b], HotsetState(), 3600)
    assert ib.supersedes == a.record.memory_id


def test_events_are_not_superseded() -> None:
    p = prep(msg(key="k"))
    assert p.active_field is None


def test_delete_intent() -> None:
    p = prep(msg(op="delete", memory_id="m1", type=None, content=None))
    [intent] = plan([p], HotsetState(), 3600)
    assert intent.kind == "delete" and intent.record.deleted and intent.record.content is None


def test_search_terms_indexed() -> None:
    p = prep(msg(content={"text": "Kafka partitions and Redis pipelines"}))
    assert {"kafka", "partitions", "redis", "pipelines"} <= set(p.terms)
    assert "and" not in p.terms


def test_republished_event_id_is_a_replay() -> None:
    first = msg(offset=1, content={"text": "once"})
    again = Incoming(first.value, first.topic, first.partition, 99)  # same event, later offset
    state = HotsetState()
    a, b = plan([prep(first), prep(again)], state, 3600)
    assert a.kind == "write" and b.kind == "replay" and not b.publishes
    assert plan([prep(again)], state, 3600)[0].kind == "replay"


@pytest.mark.parametrize(
    "over",
    [
        {},
        {"occurred_at": "2026-03-04T05:06:07.123456+02:00", "importance": 0.25, "citations": ["a", "b"]},
        {"occurred_at": "2026-03-04T05:06:07.5Z", "importance": 1, "ttl_seconds": 60},
        {"content": {"text": 'ünïcode ✓ "quoted" \\ \n line', "extra": {"deep": [1, 2.5, None, True]}}},
        {"type": "decision", "key": "db", "metadata": {"k": {"n": 1e-7, "s": "password=hunter22"}}},
        {"op": "delete", "memory_id": "m-given", "content": None},
        {"channel": {"id": "c1", "visibility": "public"}, "agent_id": "a", "user_id": "u"},
    ],
)
def test_record_json_is_what_pydantic_writes(over: dict[str, Any]) -> None:
    record = prep(msg(**over)).record
    assert record.to_json() == record.model_dump_json().encode()
    parsed = MemoryRecord.from_json(record.to_json())  # a validated record serializes the same way
    assert parsed.to_json() == parsed.model_dump_json().encode() == record.to_json()


def _mixed_batch(n: int) -> list[Prepared]:
    """n events of three tenants: conversation turns (some repeated within the dedupe window),
    decisions arriving out of order, re-sent events and summaries citing earlier memories."""
    out: list[Prepared] = []
    for i in range(n):
        tenant = f"t{i % 3}"
        minute = f"2026-01-01T{(i // 60) % 24:02d}:{i % 60:02d}:00Z"
        kind = i % 10
        if kind < 6:
            session, text = ("s0", "ok, noted") if kind == 0 else (f"s{i % 11}", f"turn {i} of session {i % 11}")
            m = msg(tenant_id=tenant, session_id=session, content={"text": text}, occurred_at=minute)
        elif kind < 8:
            when = f"2026-01-0{1 + (i * 7) % 9}T00:00:00Z"  # later events are not always newer
            m = msg(tenant_id=tenant, type="decision", key=f"k{i % 5}", content={"text": f"pick {i}"}, occurred_at=when)
        elif kind == 8 and len(out) >= 12:
            earlier = out[-12]  # far enough back to be in the previous slice, at times
            m = Incoming(orjson.dumps(earlier.event.model_dump(mode="json")), "memory.events", 0, 10_000 + i)
        else:
            cited = [p.record.memory_id for p in out[-30:] if p.record.tenant_id == tenant and not p.record.citations][
                :3
            ]
            if i % 20 == 9:
                cited.append("missing")
            m = msg(tenant_id=tenant, type="summary", content={"text": f"summary {i}"}, citations=cited)
        out.append(prep(m))
    return out


def _outcome(intents: list[Any]) -> list[tuple[Any, ...]]:
    return [
        (
            i.kind,
            i.record.memory_id,
            i.record.superseded_by,
            i.terms,
            i.context_terms,
            i.supersedes,
            i.dedupe_value,
            i.active_value,
        )
        for i in intents
    ]


def test_planning_with_the_previous_batch_carried_equals_planning_one_batch() -> None:
    """The ingest agent plans a batch while the previous batch's hotset write is under way: what
    the hotset returns then lags one batch, and `carried_state` of that batch is laid over it.
    Planned in slices that way, 3,000 events decide exactly what they decide as one batch."""
    events = _mixed_batch(3000)
    whole = plan(events, HotsetState(), 3600)
    kinds = {i.kind for i in whole}
    assert {"write", "duplicate", "replay", "refused"} <= kinds, kinds  # the mix exercises every path
    assert any(i.supersedes for i in whole) and any(i.record.superseded_by for i in whole)
    assert any(i.context_terms for i in whole)

    landed = HotsetState()  # what the hotset holds: every slice but the one whose write is under way
    under_way: HotsetState | None = None
    sliced = []
    for start in range(0, len(events), 250):
        batch = events[start : start + 250]
        state = HotsetState()
        state.carry(landed)  # the hotset's answer, one slice behind
        for p in batch:  # ... which reads the memories a summary cites as absent when not landed
            for cited in p.record.citations:
                state.memories.setdefault((p.record.tenant_id, cited), "absent")
        if under_way is not None:
            state.carry(under_way)
        sliced.extend(plan(batch, state, 3600))
        if under_way is not None:
            landed.carry(under_way)
        under_way = carried_state(batch, state)
    assert _outcome(sliced) == _outcome(whole)


def test_carried_state_holds_only_the_batch_own_entries() -> None:
    earlier = [prep(msg(type="decision", key="db", content={"text": "use postgres"}))]
    state = HotsetState()
    plan(earlier, state, 3600)
    batch = [prep(msg(content={"text": "hello"})), prep(msg(type="rule", key="tone", content={"text": "be brief"}))]
    plan(batch, state, 3600)
    carried = carried_state(batch, state)
    assert carried.seen == {("acme", p.record.event_id) for p in batch}
    assert set(carried.active) == {("acme", "rule\x1ftone")}
    assert set(carried.memories) == {("acme", p.record.memory_id) for p in batch}
    assert set(carried.previous_turn) == {("acme", "s1")}

"""Forgetting as pure policy: what a delete plans, what memory.records receives, erasure and
export decisions (app.pipeline, app.erasure) and the topics' retention (topics/)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from app.erasure import Subject, delete_event, holds, merge_newest, subject_from_args
from app.models import MemoryEvent, MemoryRecord
from app.pipeline import Incoming, Prepared, plan, prepare, record_digest, record_messages, validate
from app.settings import Settings
from sinks.hotset import HotsetState
from topics import declared_topics

N = 0


def prep(offset: int | None = None, **over: Any) -> Prepared:
    global N
    N += 1
    body: dict[str, Any] = {
        "schema_version": 1,
        "event_id": f"f{N}",
        "tenant_id": "acme",
        "type": "event",
        "session_id": "s1",
        "user_id": "u-1",
        "agent_id": "a-1",
        "content": {"text": "Alice lives in Lisbon"},
        "metadata": {"email": "alice@example.com"},
        "occurred_at": "2026-01-01T00:00:00Z",
    }
    body.update(over)
    m = Incoming(orjson.dumps(body), "memory.events", 0, N if offset is None else offset)
    event = validate(m)
    assert isinstance(event, MemoryEvent), event
    return prepare(event, m.position)


def delete(memory_id: str, at: str = "2026-01-02T00:00:00Z") -> Prepared:
    return prep(op="delete", memory_id=memory_id, type=None, content=None, metadata={}, occurred_at=at)


def test_a_delete_record_keeps_ids_and_version_only() -> None:
    rec = delete("m1").record
    assert rec.deleted and rec.content is None and rec.metadata == {}
    assert (rec.user_id, rec.agent_id, rec.session_id, rec.key, rec.type) == (None, None, None, None, None)
    assert rec.memory_id == "m1" and rec.event_id and len(rec.version) == 32
    assert rec.to_json() == rec.model_dump_json().encode()


def test_a_delete_forgets_what_the_batch_wrote_before_it() -> None:
    write = prep(memory_id="m1", content={"text": "Kafka partitions rebalance"})
    state = HotsetState()
    w, x = plan([write, delete("m1")], state, 3600)
    assert w.kind == "write" and x.kind == "delete"
    assert x.forgets is not None and x.forgets.memory_id == "m1"
    assert {"kafka", "partitions", "rebalance"} <= set(x.terms)
    assert x.dedupe_digest == write.dedupe_digest == record_digest(write.record)
    assert (("acme", write.dedupe_digest)) not in state.dedupe  # the same text may be stored again


def test_a_delete_forgets_the_stored_record_read_from_the_hotset() -> None:
    stored = prep(memory_id="m2", content={"text": "stored earlier"}).record
    state = HotsetState(stored={("acme", "m2"): stored})
    [x] = plan([delete("m2")], state, 3600)
    assert x.forgets == stored and "stored" in x.terms
    # A delete older than the stored version forgets nothing.
    newer = stored.model_copy(update={"version": "9" * 32})
    [old] = plan([delete("m2")], HotsetState(stored={("acme", "m2"): newer}), 3600)
    assert old.forgets is None and old.terms == ()


def test_the_same_text_after_a_delete_is_stored_again() -> None:
    first = prep(memory_id="m3", content={"text": "remember me"})
    state = HotsetState()
    plan([first, delete("m3")], state, 3600)
    again = prep(memory_id="m4", content={"text": "remember me"}, occurred_at="2026-01-01T00:00:10Z")
    [w] = plan([again], state, 3600)
    assert w.kind == "write"


def test_records_topic_gets_the_delete_record_then_a_null_tombstone() -> None:
    w, x = plan([prep(memory_id="m5"), delete("m5")], HotsetState(), 3600)
    messages = record_messages([w, x])
    assert [k for k, _ in messages] == [b"acme/m5"] * 3
    assert messages[0][1] == w.record_json and messages[1][1] == x.record_json and messages[2][1] is None
    assert b"Lisbon" not in (messages[1][1] or b"") and b"alice" not in (messages[1][1] or b"")


def test_topics_bound_raw_retention_and_compact_records() -> None:
    s = Settings(events_retention_seconds=2 * 86400)
    by_name = {t.name: t.config for t in declared_topics(s)}
    assert by_name[s.topic_events] == {"cleanup.policy": "delete", "retention.ms": str(2 * 86400 * 1000)}
    assert by_name[s.topic_records]["cleanup.policy"] == "compact"
    assert by_name[s.topic_records]["delete.retention.ms"] == str(s.records_tombstone_retention_seconds * 1000)
    assert by_name[s.topic_deadletter]["retention.ms"] == str(s.deadletter_retention_seconds * 1000)
    assert all(c.get("retention.ms") != "-1" for n, c in by_name.items() if n != s.topic_records)


def _rec(memory_id: str, version: str, **over: Any) -> MemoryRecord:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    values: dict[str, Any] = {"content": {"text": "x"}, "user_id": "u-1", **over}
    return MemoryRecord(
        tenant_id="acme",
        memory_id=memory_id,
        version=version.zfill(32),
        event_id=f"e-{memory_id}-{version}",
        occurred_at=at,
        created_at=at,
        updated_at=at,
        **values,
    )


def test_erasure_and_export_policies() -> None:
    u = Subject("user_id", "u-1")
    assert holds(_rec("a", "1"), u) and not holds(_rec("a", "1", user_id="u-2"), u)
    assert not holds(_rec("a", "1", deleted_at=datetime(2026, 1, 2, tzinfo=UTC)), u)
    newest = merge_newest([_rec("a", "1"), _rec("b", "5")], [_rec("a", "2"), _rec("b", "4")])
    assert {k: v.version[-1] for k, v in newest.items()} == {"a": "2", "b": "5"}
    now = datetime(2025, 1, 1, tzinfo=UTC)  # a clock behind the record's time still orders after it
    ev = delete_event(_rec("a", "2"), now)
    assert ev.op == "delete" and ev.memory_id == "a" and ev.occurred_at > _rec("a", "2").occurred_at
    assert ev.event_id == delete_event(_rec("a", "2"), datetime.now(UTC)).event_id  # a re-run replays
    assert ev.event_id != delete_event(_rec("a", "3"), now).event_id
    assert subject_from_args(None, "agent-9", None) == Subject("agent_id", "agent-9")
    with pytest.raises(ValueError):
        subject_from_args("u", "a", None)
    with pytest.raises(ValueError):
        Subject("email", "x")  # type: ignore[arg-type]

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.models import MAX_TEXT_BYTES, MEMORY_ID_NAMESPACE, MemoryEvent, derive_memory_id, make_version
from app.schema import render

ROOT = Path(__file__).resolve().parents[3]


def ev(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "schema_version": 1,
        "event_id": "e1",
        "tenant_id": "acme",
        "type": "event",
        "content": {"text": "hello"},
        "occurred_at": "2026-01-01T00:00:00Z",
    }
    base.update(over)
    return base


def parse(d: dict[str, object]) -> MemoryEvent:
    return MemoryEvent.model_validate_json(json.dumps(d))  # json: orjson refuses >64-bit ints


def test_schema_file_matches_model() -> None:
    # Regenerate with `make schema` when the model changes.
    assert (ROOT / "schemas" / "memory-event.schema.json").read_text() == render()
    assert json.loads(render())["additionalProperties"] is False


def test_minimal_event_defaults() -> None:
    e = parse(ev())
    assert e.op == "upsert" and e.visibility == "private" and e.remember is True
    assert e.resolved_memory_id() == derive_memory_id("acme", "e1")
    assert derive_memory_id("acme", "e1") != derive_memory_id("other", "e1")


@pytest.mark.parametrize("tenant,event", [("acme", "e1"), ("t-9", "ünïcode ✓"), ("a", ""), ("x" * 64, "y" * 128)])
def test_memory_id_is_the_documented_uuid5(tenant: str, event: str) -> None:
    expected = "m-" + uuid.uuid5(MEMORY_ID_NAMESPACE, f"{tenant}\x1f{event}").hex
    assert derive_memory_id(tenant, event) == expected


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"unknown": 1}, "unknown"),
        ({"schema_version": 2}, "schema_version"),
        ({"tenant_id": "bad tenant!"}, "tenant_id"),
        ({"type": "nope"}, "type"),
        ({"importance": True}, "importance"),
        ({"importance": "0.5"}, "importance"),
        ({"importance": 1.5}, "importance"),
        ({"ttl_seconds": 0}, "ttl_seconds"),
        ({"ttl_seconds": 10**18}, "ttl_seconds"),
        ({"occurred_at": "2026-01-01T00:00:00"}, "occurred_at"),
        ({"content": {"status": "open"}}, "text"),
        ({"content": None}, "content is required"),
        ({"type": None}, "type is required"),
        ({"type": "task", "content": {"text": "x"}}, "status"),
        ({"type": "task", "content": {"text": "x", "status": "later"}}, "status"),
        ({"type": "handoff", "content": {"text": "x", "to_agent": "b"}}, "to_agent and task"),
        ({"type": "summary", "citations": []}, "citations"),
        ({"op": "delete", "memory_id": None}, "memory_id"),
        ({"channel": {"id": "c", "visibility": "secret"}}, "visibility"),
        ({"event_id": ""}, "event_id"),
        ({"content": {"text": "x" * (MAX_TEXT_BYTES + 1)}}, "exceeds"),
        ({"metadata": {"blob": "y" * 17000}}, "metadata"),
        ({"remember": 0}, "remember"),
        ({"schema_version": True}, "schema_version"),
        ({"schema_version": 1.0}, "schema_version"),
        ({"occurred_at": 1700000000}, "occurred_at"),
        ({"occurred_at": "1960-01-01T00:00:00Z"}, "1970"),
        ({"metadata": {"big": 2**70}}, "portable JSON"),
    ],
)
def test_invalid_events_rejected(override: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse(ev(**override))
    assert fragment in str(info.value)


def test_valid_special_types() -> None:
    assert parse(ev(type="task", key="t", content={"text": "x", "status": "blocked"})).key == "t"
    h = parse(ev(type="handoff", content={"text": "x", "to_agent": "b", "task": "do it"}))
    assert h.content is not None and h.content.to_agent == "b"
    s = parse(ev(type="summary", citations=["m1", "m2"]))
    assert s.citations == ["m1", "m2"]
    d = parse(ev(op="delete", memory_id="m1", type=None, content=None))
    assert d.op == "delete"


def test_versions_order_by_time_then_offset() -> None:
    from datetime import UTC, datetime

    t1 = datetime(2026, 1, 1, tzinfo=UTC)
    t2 = datetime(2026, 1, 2, tzinfo=UTC)
    assert make_version(t1, 999) < make_version(t2, 0)
    assert make_version(t1, 5) < make_version(t1, 6)
    assert len(make_version(t2, 10**12)) == 32


def test_readme_lists_every_setting_with_its_default() -> None:
    from app.config_doc import BEGIN, END, render
    from app.settings import Settings

    undescribed = [name for name, field in Settings.model_fields.items() if not field.description]
    assert not undescribed, "describe these settings with Field(description=...) in app/settings.py"
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index(BEGIN) + len(BEGIN) : readme.index(END)].strip()
    assert block == render(), "README configuration table is stale: run `make docs`"

"""sinks.hotset.writer.coverage: what a call of intents tells the hotset about where it began."""

from __future__ import annotations

from dataclasses import replace

from app.models import MemoryRecord, SourcePosition
from app.pipeline import Intent
from sinks.hotset.writer import NO_TTL, coverage
from tests.support.warehouse import record


def intent(kind: str, rec: MemoryRecord, partition: int = 1, offset: int = 10) -> Intent:
    src = SourcePosition(topic="memory.events", partition=partition, offset=offset)
    return Intent(kind, rec.model_copy(update={"source": src}), {})  # type: ignore[arg-type]


def ttl(rec: MemoryRecord) -> int:
    return 300 if rec.type is not None and rec.type.value == "rule" else 900


def test_lowest_offset_and_shortest_ttl_per_tenant() -> None:
    a, b = record("ta", "e1"), record("ta", "e2", type="rule", key="k")
    out = coverage([intent("write", a, offset=12), intent("write", b, offset=10)], ttl, 5)
    assert out == {"ta": "1:10:300:5"}


def test_events_that_store_nothing_still_mark_where_the_hotset_began() -> None:
    out = coverage([intent("duplicate", record("tb", "e1"), offset=3)], ttl, 5)
    assert out == {"tb": f"1:3:{NO_TTL}:5"}


def test_restores_and_records_without_a_source_do_not_count() -> None:
    rec = record("tc", "e1")
    restored = intent("restore", rec)
    unsourced = replace(intent("write", rec), record=rec.model_copy(update={"source": None}))
    assert coverage([restored, unsourced], ttl, 5) == {}


def test_another_partition_keeps_the_first_ones_offset() -> None:
    rec = record("td", "e1")
    out = coverage([intent("write", rec, partition=1, offset=20), intent("write", rec, partition=2, offset=1)], ttl, 5)
    assert out == {"td": "1:20:900:5"}

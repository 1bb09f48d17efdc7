"""The warehouse sink on the real connector against the emulator (no Kafka): MERGE semantics."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest

from app.models import AuditEntry, MemoryRecord
from app.settings import Settings
from sinks.warehouse import AuditLogsTable, FlushResult, MemoryRecordsTable, WarehouseSink, classify
from tests.support.stack import Stack
from tests.support.warehouse import audit_entry, count, query, record, snapshot


@pytest.fixture
def sink(settings: Settings) -> Iterator[WarehouseSink]:
    s = WarehouseSink(settings, MemoryRecordsTable())
    yield s
    s.close()


def write(sink: WarehouseSink, *values: MemoryRecord | bytes) -> None:
    for i, v in enumerate(values):
        sink.add(v.to_json() if isinstance(v, MemoryRecord) else v, "memory.records", 0, i)
    sink.flush()


def rows(settings: Settings, tenant: str) -> dict[str, dict[str, object]]:
    names = ["id", "version", "type", "key", "content", "superseded_by", "deleted", "created_at", "agent_id"]
    got = query(
        settings,
        "SELECT id, version::STRING, type, key, content, superseded_by, deleted_at IS NOT NULL, created_at, "
        "agent_id FROM MEMORY_RECORDS WHERE tenant_id = %s",
        (tenant,),
    )
    out = {}
    for r in got:
        d = dict(zip(names, r, strict=True))
        d["content"] = orjson.loads(str(d["content"])) if d["content"] is not None else None
        out[str(d["id"])] = d
    return out


def test_records_land_once_and_a_replay_changes_nothing(sink: WarehouseSink, settings: Settings, tenant: str) -> None:
    recs = [record(tenant, f"e{i}", offset=i, agent_id="a1") for i in range(50)]
    write(sink, *recs)
    assert count(settings, [tenant]) == 50
    before = snapshot(settings, [tenant])
    write(sink, *recs)  # redelivery
    write(sink, *recs, *recs)  # the same ids twice in one batch
    assert snapshot(settings, [tenant]) == before
    got = rows(settings, tenant)
    assert {r.memory_id for r in recs} == set(got)
    # 32-digit versions survive exactly (the emulator turns some casts into 64-bit ints or doubles)
    assert all(str(got[r.memory_id]["version"]).zfill(32) == r.version for r in recs)


def test_only_a_newer_version_updates(sink: WarehouseSink, settings: Settings, tenant: str) -> None:
    v1 = record(tenant, "e1", memory_id="m1", content={"text": "first"}, occurred_at="2026-03-01T10:00:00Z")
    v2 = record(tenant, "e2", memory_id="m1", content={"text": "second"}, occurred_at="2026-03-01T11:00:00Z")
    v3 = record(tenant, "e3", memory_id="m1", content={"text": "third"}, occurred_at="2026-03-01T12:00:00Z")
    write(sink, v2)
    write(sink, v1)  # older, arriving late: ignored
    assert rows(settings, tenant)["m1"]["content"] == {"text": "second"}
    write(sink, v3, v1)  # in one batch: the latest version per id wins
    got = rows(settings, tenant)["m1"]
    assert got["content"] == {"text": "third"} and str(got["version"]).zfill(32) == v3.version
    assert got["created_at"] == datetime(2026, 3, 1, 11, 0)  # first seen, kept across versions


def forgotten(settings: Settings, tenant: str, memory_id: str) -> dict[str, object]:
    names = ["metadata", "user_id", "session_id", "citations", "redactions", "importance", "event_id", "deleted_at"]
    [got] = query(
        settings,
        f"SELECT {', '.join(names)} FROM MEMORY_RECORDS WHERE tenant_id = %s AND id = %s",
        (tenant, memory_id),
    )
    out = dict(zip(names, got, strict=True))
    for n in ("metadata", "citations", "redactions"):
        out[n] = orjson.loads(str(out[n])) if out[n] is not None else None
    return out


def test_a_delete_forgets_and_leaves_a_tombstone(sink: WarehouseSink, settings: Settings, tenant: str) -> None:
    live = record(
        tenant,
        "e1",
        memory_id="m1",
        type="decision",
        key="db",
        content={"text": "use snowflake"},
        metadata={"email": "alice@example.com"},
        user_id="u-alice",
        session_id="s-alice",
        agent_id="a1",
        citations=["m0"],
        importance=0.9,
    )
    write(sink, live)
    # The delete record as an older worker published it (metadata and scopes still in it): the
    # row forgets them anyway.
    tomb = live.model_copy(
        update={
            "event_id": "del-1",
            "version": record(tenant, "x", occurred_at="2026-03-02T00:00:00Z").version,
            "content": None,
            "deleted_at": datetime(2026, 3, 2, tzinfo=UTC),
            "updated_at": datetime(2026, 3, 2, tzinfo=UTC),
        }
    )
    write(sink, tomb)
    got = rows(settings, tenant)["m1"]
    assert got["deleted"] is True
    assert (got["type"], got["key"], got["content"], got["agent_id"]) == ("decision", None, None, None)
    assert str(got["version"]).zfill(32) == tomb.version
    gone = forgotten(settings, tenant, "m1")
    assert (gone["metadata"], gone["citations"], gone["redactions"]) == ({}, [], {})
    assert (gone["user_id"], gone["session_id"], gone["importance"]) == (None, None, None)
    assert gone["event_id"] == "del-1" and gone["deleted_at"] is not None
    before = snapshot(settings, [tenant])
    write(sink, live, tomb)  # replaying both changes nothing
    write(sink, live)  # nor does the older upsert alone: the content never comes back
    assert snapshot(settings, [tenant]) == before
    # A null value (the compaction tombstone that follows a delete record) is nothing to write.
    assert sink.add(None, "memory.records", 0, 99) is None and not sink.pending and not sink.rejected
    # A delete of a memory the warehouse never saw is kept as a tombstone (an older write that
    # arrives later cannot resurrect it).
    ghost = tomb.model_copy(update={"memory_id": "m-ghost"})
    write(sink, ghost)
    write(sink, record(tenant, "old", memory_id="m-ghost", occurred_at="2026-02-01T00:00:00Z"))
    assert rows(settings, tenant)["m-ghost"]["deleted"] is True
    assert rows(settings, tenant)["m-ghost"]["content"] is None
    assert forgotten(settings, tenant, "m-ghost")["user_id"] is None


def test_supersession_is_recorded_on_the_older_rows(sink: WarehouseSink, settings: Settings, tenant: str) -> None:
    def decision(eid: str, day: int, **kw: object) -> MemoryRecord:
        return record(
            tenant,
            eid,
            memory_id=f"d-{eid}",
            type="decision",
            key="db",
            content={"text": eid},
            occurred_at=f"2026-03-0{day}T00:00:00Z",
            **kw,
        )

    a, b, c = decision("a", 1), decision("b", 2), decision("c", 3)
    other_key = record(tenant, "r", memory_id="d-r", type="decision", key="cache", content={"text": "r"})
    write(sink, a, other_key)
    write(sink, c)  # the newest arrives before b
    # b arrives late: the ingest agent publishes it already marked superseded by c
    write(sink, b.model_copy(update={"superseded_by": c.memory_id}))
    got = rows(settings, tenant)
    assert got["d-a"]["superseded_by"] == c.memory_id  # the ingest agent never republishes a
    assert got["d-b"]["superseded_by"] == c.memory_id
    assert got["d-c"]["superseded_by"] is None
    assert got["d-r"]["superseded_by"] is None  # another key is untouched
    before = snapshot(settings, [tenant])
    write(sink, a, b, c)
    assert snapshot(settings, [tenant]) == before


def test_rows_that_can_never_be_written_are_isolated(sink: WarehouseSink, settings: Settings, tenant: str) -> None:
    good = [record(tenant, f"g{i}", offset=i) for i in range(9)]
    # A valid record (another producer on memory.records; the event model bounds ttl_seconds, the
    # record model does not) that the warehouse rejects: ttl_seconds does not fit NUMBER(18, 0).
    too_big = record(tenant, "big").model_copy(update={"ttl_seconds": 10**19})
    write(sink, *good[:4], b"{not json", too_big, *good[4:])
    assert count(settings, [tenant]) == 9
    reasons = {r.stage: r.reason for r in sink.rejected}
    assert set(reasons) == {"warehouse-parse", "warehouse-merge"}
    assert "Invalid JSON" in reasons["warehouse-parse"]
    assert "Conversion Error" in reasons["warehouse-merge"] or "out of range" in reasons["warehouse-merge"]
    merged = [r for r in sink.rejected if r.stage == "warehouse-merge"]
    assert merged[0].tenant_id == tenant and merged[0].raw == too_big.to_json()
    assert not sink.pending


def test_audit_entries_merge_by_log_id(settings: Settings, tenant: str) -> None:
    sink = WarehouseSink(settings, AuditLogsTable())
    try:
        entries = [AuditEntry.model_validate(audit_entry(tenant, f"{tenant}-{i}")) for i in range(20)]
        for i, e in enumerate(entries):
            sink.add(e.to_json(), "memory.audit", 0, i)
        sink.flush()
        assert count(settings, [tenant], "AUDIT_LOGS") == 20
        before = snapshot(settings, [tenant])
        for i, e in enumerate(entries + entries):
            sink.add(e.to_json(), "memory.audit", 0, i)
        sink.flush()
        assert snapshot(settings, [tenant]) == before
        row = query(
            settings,
            "SELECT action, success, status_code, resource_ids FROM AUDIT_LOGS WHERE log_id = %s",
            (f"{tenant}-3",),
        )
        assert row[0][:3] == ("memory.store", True, 202) and orjson.loads(row[0][3]) == [f"m-{tenant}-3"]
    finally:
        sink.close()


def test_an_unreachable_warehouse_raises_a_transient_error_and_keeps_the_batch(stack: Stack, tenant: str) -> None:
    from app.devstack import free_port

    down = stack.settings(snowflake_port=free_port(), snowflake_network_timeout_s=1)
    sink = WarehouseSink(down, MemoryRecordsTable())
    try:
        sink.add(record(tenant, "e1").to_json(), "memory.records", 0, 0)
        with pytest.raises(Exception) as info:
            sink.flush()
        assert classify(info.value) == "transient"
        assert len(sink.pending) == 1 and not sink.rejected  # nothing dropped, nothing dead-lettered
    finally:
        sink.close()


def add(sink: WarehouseSink, recs: list[MemoryRecord] | list[bytes], first_offset: int = 0) -> None:
    for i, v in enumerate(recs):
        sink.add(v.to_json() if isinstance(v, MemoryRecord) else v, "memory.records", 0, first_offset + i)


def test_flush_later_stages_now_and_merges_when_called(settings: Settings, tenant: str) -> None:
    # Two sinks of one table, as the warehouse agent uses them: the second batch is staged while
    # the first is staged and not yet merged, and neither disturbs the other's stage table.
    one, two = WarehouseSink(settings, MemoryRecordsTable()), WarehouseSink(settings, MemoryRecordsTable())
    try:
        first = [record(tenant, f"a{i}", offset=i) for i in range(300)]
        second = [record(tenant, f"b{i}", offset=300 + i) for i in range(200)]
        add(one, first)
        merge_first = one.flush_later(r1 := FlushResult())
        add(two, second, 300)
        merge_second = two.flush_later(r2 := FlushResult())
        assert count(settings, [tenant]) == 0  # staged, not merged
        assert len(one.pending) == 300 and len(two.pending) == 200  # nothing written yet
        merge_first()
        assert count(settings, [tenant]) == 300 and r1.rows == 300 and r1.counts.inserted == 300
        merge_second()
        assert count(settings, [tenant]) == 500 and r2.rows == 200 and r2.counts.inserted == 200
        assert set(rows(settings, tenant)) == {r.memory_id for r in first + second}
        assert not one.pending and not two.pending
    finally:
        one.close()
        two.close()


def test_a_merge_after_a_reconnection_stages_its_rows_again(
    sink: WarehouseSink, settings: Settings, tenant: str
) -> None:
    recs = [record(tenant, f"e{i}", offset=i) for i in range(120)]
    add(sink, recs)
    merge = sink.flush_later(result := FlushResult())
    sink.reset()  # the session and its stage table are gone (a warehouse restart, a dropped connection)
    merge()
    assert count(settings, [tenant]) == 120 and result.counts.inserted == 120
    assert set(rows(settings, tenant)) == {r.memory_id for r in recs}


def test_flush_later_isolates_rows_that_can_never_be_written(
    sink: WarehouseSink, settings: Settings, tenant: str
) -> None:
    good = [record(tenant, f"g{i}", offset=i) for i in range(9)]
    too_big = record(tenant, "big").model_copy(update={"ttl_seconds": 10**19})
    add(sink, [*good[:4], too_big, *good[4:]])
    merge = sink.flush_later(FlushResult())
    merge()
    assert count(settings, [tenant]) == 9
    assert [(r.stage, r.raw) for r in sink.rejected] == [("warehouse-merge", too_big.to_json())]
    assert not sink.pending


def test_flush_later_writes_every_chunk(settings: Settings, tenant: str) -> None:
    sink = WarehouseSink(settings.model_copy(update={"sink_batch_max_rows": 40}), MemoryRecordsTable())
    try:
        recs = [record(tenant, f"e{i}", offset=i) for i in range(130)]
        add(sink, recs)
        merge = sink.flush_later(result := FlushResult())
        assert count(settings, [tenant]) == 0
        merge()
        assert count(settings, [tenant]) == 130 and result.chunks == 4 and result.rows == 130
        assert not sink.pending
    finally:
        sink.close()

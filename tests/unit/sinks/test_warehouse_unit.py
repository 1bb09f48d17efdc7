"""The warehouse sink's pure parts: parsing to staging rows, chunking, the error policy, the SQL."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import orjson
import pytest
from snowflake.connector.errors import (
    DatabaseError,
    HttpError,
    InternalServerError,
    OperationalError,
    ProgrammingError,
    ServiceUnavailableError,
)

from agents.warehouse import _dead
from app.models import AuditEntry, MemoryRecord
from sinks.warehouse import AuditLogsTable, MemoryRecordsTable, Rejected, Row, Tombstone, chunks, classify, parse
from sinks.warehouse.check import FIELD_TYPES, canonical_row
from tests.support.warehouse import audit_entry, record

RECORDS = MemoryRecordsTable()
AUDIT = AuditLogsTable()


def staged(item: Row | Rejected) -> dict[str, object]:
    assert isinstance(item, Row), item
    out: dict[str, object] = orjson.loads(item.line)
    return out


def test_a_record_stages_under_the_table_columns() -> None:
    rec = record("t1", "e1", offset=42, key="k", importance=0.5, metadata={"a": 1})
    row = parse(RECORDS, rec.to_json(), "memory.records", 3, 17, 1700000000.5)
    assert isinstance(row, Row)
    assert row.tenant_id == "t1" and row.timestamp == 1700000000.5 and not row.grouped
    assert (row.position.topic, row.position.partition, row.position.offset) == ("memory.records", 3, 17)
    d = staged(row)
    assert set(d) <= {c.name for c in RECORDS.columns}
    assert d["id"] == rec.memory_id and d["version"] == rec.version and len(str(d["version"])) == 32
    assert d["source_partition"] == 0 and d["source_offset"] == 42  # where the event was, not the record
    assert d["occurred_at"] == "2026-03-01 10:00:00"  # NTZ holds UTC wall-clock time
    assert "deleted_at" not in d and "superseded_by" not in d  # absent, so NULL (not a VARIANT null)


def test_timestamps_with_an_offset_are_stored_as_utc() -> None:
    rec = record("t1", "e1", occurred_at="2026-03-01T12:30:00.250+02:00")
    assert staged(parse(RECORDS, rec.to_json(), "r", 0, 0))["occurred_at"] == "2026-03-01 10:30:00.250000"


def test_superseding_types_with_a_key_are_grouped_for_the_supersession_pass() -> None:
    decision = record("t1", "d1", type="decision", key="db")
    assert isinstance(row := parse(RECORDS, decision.to_json(), "r", 0, 0), Row) and row.grouped
    keyless = record("t1", "d2", type="decision")
    assert isinstance(row := parse(RECORDS, keyless.to_json(), "r", 0, 0), Row) and not row.grouped
    chunk = record("t1", "c1", type="chunk", key="db")
    assert isinstance(row := parse(RECORDS, chunk.to_json(), "r", 0, 0), Row) and not row.grouped


def test_a_delete_stages_as_a_tombstone() -> None:
    base = record("t1", "e1", key="k", user_id="u", agent_id="a", metadata={"email": "x@example.com"})
    tomb = base.model_copy(
        update={"content": None, "deleted_at": datetime(2026, 3, 2, tzinfo=UTC), "version": "9" * 32}
    )
    d = staged(parse(RECORDS, tomb.to_json(), "r", 0, 0))
    assert "content" not in d and d["deleted_at"] == "2026-03-02 00:00:00"
    # Whatever the delete record carries, the row forgets the metadata and whom it was about.
    assert d["metadata"] == {} and d["citations"] == [] and d["redactions"] == {}
    assert not {"key", "user_id", "agent_id", "session_id", "channel_id", "importance"} & set(d)
    assert d["id"] == base.memory_id and d["event_id"] == base.event_id and d["type"] == "event"


def test_a_null_value_is_a_tombstone_not_a_reject() -> None:
    assert parse(RECORDS, None, "r", 3, 9) == Tombstone("r", 3, 9)
    assert isinstance(parse(RECORDS, b"", "r", 3, 9), Rejected)  # an empty value is still refused


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", "empty message"),
        (b"{not json", "Invalid JSON"),
        (orjson.dumps({"tenant_id": "t9", "memory_id": "m"}), "version"),
        (orjson.dumps({**orjson.loads(record("t9", "e").to_json()), "version": "12"}), "version"),
        (orjson.dumps({**orjson.loads(record("t9", "e").to_json()), "surprise": 1}), "surprise"),
    ],
)
def test_values_that_are_not_records_are_rejected_with_a_reason(value: bytes, reason: str) -> None:
    item = parse(RECORDS, value, "memory.records", 2, 7)
    assert isinstance(item, Rejected), item
    assert reason in item.reason and item.stage == "warehouse-parse"
    assert item.raw == value and item.position.offset == 7
    letter = _dead(item)
    assert base64.b64decode(letter.original_b64) == value
    assert letter.source is not None and letter.source.partition == 2
    if value.startswith(b'{"tenant_id":"t9"') or b'"t9"' in value:
        assert letter.tenant_id == "t9"


def test_audit_entries_stage_under_the_audit_columns() -> None:
    entry = AuditEntry.model_validate(audit_entry("t1", "log-1", ts="2026-03-01T11:00:00+01:00"))
    d = staged(parse(AUDIT, entry.to_json(), "memory.audit", 0, 0))
    assert set(d) <= {c.name for c in AUDIT.columns}
    assert d["ts"] == "2026-03-01 10:00:00" and d["resource_ids"] == ["m-log-1"] and d["success"] is True
    assert isinstance(parse(AUDIT, orjson.dumps({"log_id": "x"}), "a", 0, 0), Rejected)
    # A newer producer's extra field does not dead-letter the entry.
    assert isinstance(parse(AUDIT, orjson.dumps({**audit_entry("t1", "l2"), "new_field": 1}), "a", 0, 0), Row)


def test_chunks_bound_rows_and_bytes_and_keep_order() -> None:
    rows = [parse(RECORDS, record("t", f"e{i}").to_json(), "r", 0, i) for i in range(10)]
    assert all(isinstance(r, Row) for r in rows)
    typed = [r for r in rows if isinstance(r, Row)]
    size = len(typed[0].line) + 1
    by_rows = chunks(typed, 4, 10**9)
    assert [len(c) for c in by_rows] == [4, 4, 2]
    by_bytes = chunks(typed, 100, size * 3)
    assert [len(c) for c in by_bytes] == [3, 3, 3, 1]
    assert [r.position.offset for c in by_bytes for r in c] == list(range(10))
    assert [len(c) for c in chunks(typed[:1], 5, 1)] == [1]  # a row larger than the limit still goes


def test_error_policy() -> None:
    assert classify(ProgrammingError(msg="Conversion Error", errno=100035, sqlstate="22007")) == "data"
    assert classify(ProgrammingError(msg="NULL result in a non-nullable column", errno=100072, sqlstate="22000")) == (
        "data"
    )
    assert classify(ProgrammingError(msg="Table does not exist", errno=2003, sqlstate="42S02")) == "systemic"
    assert classify(ProgrammingError(msg="session expired", errno=390112, sqlstate="08001")) == "transient"
    assert classify(OperationalError(msg="could not connect", errno=250001)) == "transient"
    assert classify(HttpError(msg="401 Unauthorized", errno=290401)) == "transient"
    assert classify(InternalServerError(msg="HTTP 500", errno=290500)) == "transient"
    assert classify(ServiceUnavailableError(msg="HTTP 503")) == "transient"
    assert classify(DatabaseError(msg="?")) == "transient"
    assert classify(ConnectionRefusedError()) == "transient"
    assert classify(KeyError("bug")) == "systemic"


def test_the_merge_is_guarded_by_version_and_dedupes_the_batch() -> None:
    sql = RECORDS.merge_sql("AI_MEMORY.MEMORY_RECORDS", "STAGE")
    assert "WHEN MATCHED AND src.version > tgt.version THEN UPDATE" in sql
    assert "QUALIFY ROW_NUMBER() OVER (PARTITION BY v:tenant_id::STRING, v:id::STRING" in sql
    assert "CAST(v:version::STRING AS NUMBER(38))" in sql
    assert "ON tgt.tenant_id = src.tenant_id AND tgt.id = src.id" in sql
    audit = AUDIT.merge_sql("AI_MEMORY.AUDIT_LOGS", "STAGE")
    assert "ON tgt.log_id = src.log_id" in audit and "WHEN MATCHED" not in audit


# ---- the canonical-record fast path: the model's verdict and row, at half the cost -------------


def _canonical_variants() -> list[bytes]:
    base = record("t1", "e1", offset=42, key="k", importance=0.5, metadata={"a": 1})
    tomb = base.model_copy(update={"content": None, "deleted_at": datetime(2026, 3, 2, 1, tzinfo=UTC)})
    return [
        base.to_json(),
        record("t1", "e2").to_json(),
        record("t1", "d1", type="decision", key="db").to_json(),
        record("t1", "e3", occurred_at="2026-03-01T12:30:00.250+02:00").to_json(),  # microseconds
        record("t1", "e4", importance=1, ttl_seconds=60).to_json(),
        tomb.to_json(),
        base.model_copy(update={"superseded_by": "m-x", "redactions": {"email": 2}, "citations": ["m-a"]}).to_json(),
        base.model_copy(update={"source": None, "type": None, "visibility": "public"}).to_json(),
        # the same fields in another order (records built by the ingest agent vs by validation)
        orjson.dumps(dict(reversed(orjson.loads(base.to_json()).items()))),
    ]


@pytest.mark.parametrize("value", _canonical_variants())
def test_canonical_records_stage_what_the_model_path_stages(value: bytes) -> None:
    fast = canonical_row(value)
    assert fast is not None, "a record as to_json writes it takes the fast path"
    model = MemoryRecordsTable.model_row(value)
    assert orjson.dumps(fast[0]) == orjson.dumps(model[0]) and fast[1:] == model[1:]
    row, tenant, grouped = fast
    if row.get("deleted_at") is not None:
        row = MemoryRecordsTable.forgotten(row)  # a delete stages as a tombstone on either path
    assert RECORDS.to_row(value) == (row, tenant, grouped)


def _mutations() -> list[tuple[str, object]]:
    bad_or_loose: list[tuple[str, object]] = [
        ("version", "12"),
        ("version", "٣" * 32),  # Unicode digits
        ("version", 10**18),
        ("version", None),
        ("tenant_id", 5),
        ("tenant_id", None),
        ("memory_id", ["m"]),
        ("event_id", None),
        ("type", "bogus"),
        ("type", 3),
        ("type", "Decision"),
        ("key", 5),
        ("visibility", "secret"),
        ("visibility", None),
        ("content", []),
        ("content", "text"),
        ("metadata", None),
        ("metadata", []),
        ("citations", [1]),
        ("citations", None),
        ("citations", "m-a"),
        ("importance", True),
        ("importance", "0.5"),  # valid for the model (lax): through the model
        ("ttl_seconds", 1.5),
        ("ttl_seconds", 60.0),  # valid for the model: through the model
        ("ttl_seconds", "60"),
        ("redactions", {"email": "2"}),
        ("redactions", {"email": 1.5}),
        ("redactions", {"email": True}),
        ("redactions", None),
        ("source", {"topic": "t", "partition": "1", "offset": 2}),
        ("source", {"topic": "t", "partition": 1}),
        ("source", []),
        ("superseded_by", 1),
    ]
    for name in ("occurred_at", "created_at", "updated_at", "deleted_at"):
        bad_or_loose += [
            (name, "2026-02-30T10:00:00Z"),
            (name, "2026-03-01T24:00:00Z"),
            (name, "2026-13-01T10:00:00Z"),
            (name, "2026-03-01T10:00:00+02:00"),  # valid for the model: through the model
            (name, "2026-03-01 10:00:00Z"),  # valid for the model: through the model
            (name, "2026-03-01T10:00:00.1234567Z"),
            (name, "2026-W09-7T10:00:00Z"),
            (name, "2026-03-01T10:00:00z"),
            (name, "2026-03-01T10:00:00"),
            (name, 1772359200),
            (name, "٢٠٢٦-03-01T10:00:00Z"),
        ]
    return bad_or_loose


@pytest.mark.parametrize(("name", "value"), _mutations())
def test_the_fast_path_accepts_only_what_the_model_accepts_with_the_same_row(name: str, value: object) -> None:
    base = orjson.loads(record("t1", "e1", key="k", importance=0.5).to_json())
    changed = orjson.dumps({**base, name: value})
    fast = canonical_row(changed)
    try:
        model = MemoryRecordsTable.model_row(changed)
    except ValueError:
        assert fast is None, "the model rejects it, the fast path must not accept it"
        assert isinstance(parse(RECORDS, changed, "r", 0, 0), Rejected)
        return
    if fast is not None:
        assert orjson.dumps(fast[0]) == orjson.dumps(model[0]) and fast[1:] == model[1:]
    assert RECORDS.to_row(changed)[1:] == model[1:]


def test_the_fast_path_knows_every_field_of_the_record() -> None:
    assert set(FIELD_TYPES) == set(MemoryRecord.model_fields)
    base = orjson.loads(record("t1", "e1").to_json())
    for name, field in MemoryRecord.model_fields.items():
        missing = orjson.dumps({k: v for k, v in base.items() if k != name})
        assert canonical_row(missing) is None  # through the model, which fills a default or rejects
        if field.is_required():
            assert isinstance(parse(RECORDS, missing, "r", 0, 0), Rejected)
    assert canonical_row(orjson.dumps({**base, "surprise": 1})) is None

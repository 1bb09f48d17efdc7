"""The pure parts of `memstream backup`: times, file names, the as-of view of held rows, which
migration statements need Time Travel."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from app.backup import BackupError, ExportReport, at_event_time, file_name, parse_time, select_sql
from app.migrate import needs_time_travel

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def row(mid: str, created_s: int, updated_s: int | None = None, **kw: Any) -> dict[str, Any]:
    def ntz(s: int) -> datetime:
        return T0.replace(tzinfo=None, second=s)

    return {
        "tenant_id": "t",
        "id": mid,
        "version": f"{created_s:032d}",
        "type": "event",
        "key": None,
        "created_at": ntz(created_s),
        "updated_at": ntz(updated_s if updated_s is not None else created_s),
        "superseded_by": None,
        "is_deleted": False,
        **kw,
    }


def test_times_and_names() -> None:
    assert parse_time("2026-03-01T10:00:00Z") == T0
    assert parse_time("2026-03-01T10:00:00") == T0  # no offset: UTC
    assert parse_time("2026-03-01T11:00:00+01:00") == T0
    with pytest.raises(BackupError, match="ISO 8601"):
        parse_time("last tuesday")
    assert file_name("acme", False) == "tenant-acme.jsonl"
    assert file_name("..", True) == "tenant-...jsonl.gz"  # never a path of its own


def test_as_of_keeps_what_was_written_and_unchanged_by_then() -> None:
    rows = [
        row("a", 1, content={"text": "a"}),
        row("late", 30, content={"text": "late"}),
        row("changed", 2, updated_s=40, is_deleted=True, content={"text": "kept by the tombstone"}),
        row("tombstone-only", 40, is_deleted=True, content=None),
    ]
    report = ExportReport()
    kept = list(at_event_time(rows, T0.replace(second=10), report))
    assert [r["id"] for r in kept] == ["a"]
    assert (report.not_yet_written, report.not_held) == (1, 2)


def test_as_of_works_supersession_out_among_the_versions_written_by_then() -> None:
    def decision(mid: str, s: int, superseded_by: str | None, **kw: Any) -> dict[str, Any]:
        return row(mid, s, type="decision", key="db", superseded_by=superseded_by, **kw)

    rows = [
        row("e", 0),
        decision("d1", 1, "d3"),
        decision("d2", 2, "d3"),
        decision("d3", 20, None),
        row("f", 3, type="rule", key="x"),
    ]
    kept = {r["id"]: r["superseded_by"] for r in at_event_time(rows, T0.replace(second=10), ExportReport())}
    assert kept == {"e": None, "d1": "d2", "d2": None, "f": None}
    # A deleted newest version never wins: the live one before it stays active.
    rows = [decision("d1", 1, "d3"), decision("d2", 2, "d3", is_deleted=True)]
    kept = {r["id"]: r["superseded_by"] for r in at_event_time(rows, T0.replace(second=10), ExportReport())}
    assert kept == {"d1": None, "d2": None}


def test_export_query_orders_groups_together_and_reads_history_only_with_time_travel() -> None:
    plain = select_sql(False, True)
    assert "AT(" not in plain and plain.endswith("WHERE tenant_id = ? ORDER BY tenant_id, type, key, version, id")
    assert "MEMORY_RECORDS AT(TIMESTAMP => ?::TIMESTAMP_TZ)" in select_sql(True, False)


def test_time_travel_statements_are_recognised() -> None:
    assert needs_time_travel("ALTER TABLE AI_MEMORY.MEMORY_RECORDS SET DATA_RETENTION_TIME_IN_DAYS = 7")
    assert needs_time_travel("alter schema s set data_retention_time_in_days = 1")
    assert not needs_time_travel("ALTER TABLE AI_MEMORY.MEMORY_RECORDS ADD COLUMN request_id VARCHAR(64)")

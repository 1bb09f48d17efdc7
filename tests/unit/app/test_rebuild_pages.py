"""Keyset pages of `memstream rebuild` and the checkpoint files of import and rebuild (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.importer import validate_line
from app.models import MemoryEvent
from app.progress import Progress, read_checkpoint, remove_checkpoint, write_checkpoint
from app.rebuild import page_sql


def test_pages_follow_the_key_order_after_the_last_row() -> None:
    sql, params = page_sql("MEMORY_RECORDS", None, None, 500)
    assert "WHERE" not in sql and sql.endswith("ORDER BY tenant_id, id LIMIT 500") and params == []
    sql, params = page_sql("MEMORY_RECORDS", None, ("acme", "m-9"), 500)
    assert "(tenant_id > ? OR (tenant_id = ? AND id > ?))" in sql and params == ["acme", "acme", "m-9"]
    sql, params = page_sql("MEMORY_RECORDS", "acme", ("acme", "m-9"), 10)
    assert sql.count("?") == 4 and params == ["acme", "acme", "acme", "m-9"] and "LIMIT 10" in sql


def test_checkpoints_are_replaced_whole(tmp_path: Path) -> None:
    cp = tmp_path / "x.checkpoint"
    assert read_checkpoint(cp) is None
    write_checkpoint(cp, {"offset": 10})
    write_checkpoint(cp, {"offset": 20})
    assert read_checkpoint(cp) == {"offset": 20} and not (tmp_path / "x.checkpoint.tmp").exists()
    cp.write_text("{half")
    with pytest.raises(ValueError, match="--restart"):
        read_checkpoint(cp)
    remove_checkpoint(cp)
    remove_checkpoint(cp)
    assert not cp.exists()


def test_lines_validate_to_an_event_a_reason_or_nothing() -> None:
    assert validate_line(b"  \n") is None
    assert "json" in str(validate_line(b"{broken")).lower()
    good = (
        b'{"schema_version":1,"event_id":"e","tenant_id":"t","type":"event",'
        b'"content":{"text":"x"},"occurred_at":"2026-01-01T00:00:00Z"}'
    )
    assert isinstance(validate_line(good), MemoryEvent)
    assert str(validate_line(good.replace(b'"event"', b'"memo"', 1))).startswith("type")


def test_progress_without_a_terminal_logs_lines(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="memstream.progress"):
        bar = Progress("rebuild all tenants", 200, "rows", bar=False, interval_s=0.0)
        bar.update(50, restored=40)
        bar.close()
    assert "rebuild all tenants: 50/200 rows (25.0%) restored=40" in caplog.text

"""Warehouse migrations: valid Snowflake, applied once, re-runnable, tamper-evident."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from app import migrate
from app.migrate import ChecksumMismatch
from app.snowflake_conn import connect
from sinks.warehouse import AuditLogsTable, MemoryRecordsTable, MemoryVectorsTable
from tests.support.stack import ROOT, Stack

MIGRATIONS = sorted((ROOT / "deploy" / "snowflake").glob("V*.sql"))
SQLFLUFF = Path(sys.executable).with_name("sqlfluff")


def sqlfluff_parse(path: Path) -> str:
    proc = subprocess.run(
        [str(SQLFLUFF), "parse", "--dialect", "snowflake", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"sqlfluff failed on {path.name}:\n{out[-3000:]}"
    assert "unparsable" not in out.lower(), f"{path.name} is not valid Snowflake SQL:\n{out[-3000:]}"
    return out


@pytest.mark.parametrize("path", MIGRATIONS, ids=lambda p: p.name)
def test_every_migration_parses_as_snowflake(path: Path) -> None:
    out = sqlfluff_parse(path)
    assert "create_table_statement" in out or "statement" in out


def test_the_sql_memstream_generates_parses_as_snowflake(tmp_path: Path) -> None:
    """The bootstrap DDL and the sink's MERGE/UPDATE run on the emulator; check them against the
    real dialect too, since the emulator accepts things Snowflake does not (and the reverse)."""
    records, audit = MemoryRecordsTable(), AuditLogsTable()
    sql = [
        *migrate.BOOTSTRAP_SQL,
        records.merge_sql("AI_MEMORY.MEMORY_RECORDS", "MEMORY_RECORDS_STAGE"),
        records.post_sql("AI_MEMORY.MEMORY_RECORDS", "MEMORY_RECORDS_STAGE"),
        audit.merge_sql("AI_MEMORY.AUDIT_LOGS", "AUDIT_LOGS_STAGE"),
        MemoryVectorsTable(reembed=True).merge_sql("AI_MEMORY.MEMORY_VECTORS", "MEMORY_VECTORS_STAGE"),
    ]
    path = tmp_path / "generated.sql"
    path.write_text(";\n\n".join(sql) + ";\n")
    out = sqlfluff_parse(path)
    assert out.count("merge_statement:") == 3
    assert "update_statement:" in out


def test_sqlfluff_check_itself_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sql"
    bad.write_text("CREATE TABLE t (id INT) ENGINE = InnoDB;\nCREATE INDEX idx ON t (id);\n")  # not Snowflake
    with pytest.raises(AssertionError):
        sqlfluff_parse(bad)


def test_migrate_applies_pending_once_and_reports(stack: Stack, tmp_path: Path) -> None:
    database = f"MIG_{uuid.uuid4().hex[:8].upper()}"
    settings = stack.settings(snowflake_database=database)
    mig_dir = tmp_path / "migrations"
    mig_dir.mkdir()
    for path in MIGRATIONS:
        shutil.copy(path, mig_dir / path.name)

    first = migrate.run(settings, directory=mig_dir)
    assert first.applied == [m.stem for m in MIGRATIONS]
    # The emulator has no Time Travel: the retention statements are skipped and reported.
    assert first.skipped == [
        f"V002__time_travel_retention statement {i} (no Time Travel on this warehouse)" for i in (1, 2)
    ]
    assert "skipped   V002__time_travel_retention statement 1" in "\n".join(first.lines())
    again = migrate.run(settings, directory=mig_dir)
    assert again.applied == [] and again.already == first.applied
    assert "up to date" in "\n".join(again.lines())

    # A new migration is applied on the next run, and only it.
    (mig_dir / "V900__extra.sql").write_text(
        "-- adds a column\nALTER TABLE AI_MEMORY.AUDIT_LOGS ADD COLUMN IF NOT EXISTS extra_note VARCHAR(64);\n"
    )
    assert migrate.run(settings, directory=mig_dir, dry_run=True).pending == ["V900__extra"]
    assert migrate.run(settings, directory=mig_dir).applied == ["V900__extra"]

    conn = connect(settings)
    try:
        cur = conn.cursor()
        rows = cur.execute("SELECT version, name, checksum FROM SCHEMA_MIGRATIONS ORDER BY version").fetchall()
        assert [(int(v), n) for v, n, _ in rows] == [
            *((m.version, m.name) for m in migrate.discover(ROOT / "deploy" / "snowflake")),
            (900, "extra"),
        ]
        tables = {r[1] for r in cur.execute("SHOW TABLES").fetchall()}
        assert {"MEMORY_RECORDS", "AUDIT_LOGS", "SCHEMA_MIGRATIONS"} <= tables
        # Versions are 32-digit numbers: the column must keep every digit.
        cur.execute(
            "INSERT INTO MEMORY_RECORDS (tenant_id, id, version) SELECT 't', 'm', "
            "CAST('00176739840000000000000000000002' AS NUMBER(38))"
        )
        assert cur.execute("SELECT version::STRING FROM MEMORY_RECORDS").fetchone() == (
            "176739840000000000000000000002",
        )
    finally:
        conn.close()

    # Editing an applied migration is refused, clearly, and nothing is applied.
    (mig_dir / "V900__extra.sql").write_text("ALTER TABLE AI_MEMORY.AUDIT_LOGS ADD COLUMN other VARCHAR;\n")
    with pytest.raises(ChecksumMismatch, match="never edit an applied migration"):
        migrate.run(settings, directory=mig_dir)


def test_cli_migrate_reports_and_fails_clearly(stack: Stack, tmp_path: Path) -> None:
    env = {**stack.env, "MEMSTREAM_SNOWFLAKE_DATABASE": f"MIGCLI_{uuid.uuid4().hex[:8].upper()}"}
    run = [sys.executable, "-m", "app.cli", "migrate"]
    full_env = {**__import__("os").environ, **env}
    ok = subprocess.run(run, env=full_env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "applied   V001__memory_records" in ok.stdout
    again = subprocess.run(run, env=full_env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert again.returncode == 0 and "up to date" in again.stdout
    missing = subprocess.run(
        [*run, "--dir", str(tmp_path / "nope")],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert missing.returncode == 1 and "does not exist" in missing.stderr

"""Warehouse migrations without a warehouse: discovery, numbering, statement splitting, the plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import migrate
from app.migrate import ChecksumMismatch, MigrationError, split_statements
from tests.support.stack import ROOT

MIGRATIONS = sorted((ROOT / "deploy" / "snowflake").glob("V*.sql"))


def test_there_are_migrations_and_they_are_numbered_in_order() -> None:
    assert MIGRATIONS, "no deploy/snowflake/V*.sql"
    found = migrate.discover(ROOT / "deploy" / "snowflake")
    assert [m.version for m in found] == sorted({m.version for m in found})
    assert found[0].version == 1


def test_split_statements_respects_quotes_comments_and_bodies() -> None:
    sql = """-- header; not a statement
    CREATE TABLE a (x VARCHAR DEFAULT 'semi;colon');
    /* block; comment */ INSERT INTO a SELECT 'it''s; fine';
    CREATE FUNCTION f() RETURNS INT AS $$ 1; $$;
    SELECT "odd;name", '-- not a comment' FROM a; -- a comment after it
    -- trailing comment only;
    """
    parts = split_statements(sql)
    assert len(parts) == 4
    assert parts[0].startswith("CREATE TABLE a") and "'semi;colon'" in parts[0]
    assert "'it''s; fine'" in parts[1] and "block" not in parts[1]
    assert parts[2].endswith("$$ 1; $$")
    assert parts[3] == """SELECT "odd;name", '-- not a comment' FROM a"""


def test_plan_refuses_an_edited_or_missing_migration(tmp_path: Path) -> None:
    (tmp_path / "V001__one.sql").write_text("CREATE SCHEMA IF NOT EXISTS AI_MEMORY;\n")
    (tmp_path / "V002__two.sql").write_text("CREATE SCHEMA IF NOT EXISTS AI_MEMORY;\n")
    found = migrate.discover(tmp_path)
    applied = {1: ("one", found[0].checksum)}
    assert [m.version for m in migrate.plan(found, applied)] == [2]
    with pytest.raises(ChecksumMismatch, match=r"V001__one\.sql changed"):
        migrate.plan(found, {1: ("one", "0" * 64)})
    with pytest.raises(MigrationError, match="file is missing"):
        migrate.plan(found, {**applied, 7: ("gone", "x")})
    (tmp_path / "V2__dup.sql").write_text("SELECT 1;\n")
    with pytest.raises(MigrationError, match="two migrations with version 2"):
        migrate.discover(tmp_path)

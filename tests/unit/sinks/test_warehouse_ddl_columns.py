"""The migrations create exactly the columns the sink declares (`sinks/warehouse/tables.py`), of
the types it stages them as, plus `loaded_at`: the DDL and the declaration cannot drift apart."""

from __future__ import annotations

import pytest
import sqlglot
from sqlglot import exp

from sinks.warehouse import AuditLogsTable, Column, MemoryRecordsTable, MemoryVectorsTable, TableSpec
from sinks.warehouse.read import SELECT_RECORDS
from sinks.warehouse.tables import LOADED_AT
from tests.support.stack import ROOT

MIGRATIONS = sorted((ROOT / "deploy" / "snowflake").glob("V*.sql"), key=lambda p: int(p.name[1:].split("__")[0]))
TABLES: list[TableSpec] = [MemoryRecordsTable(), AuditLogsTable(), MemoryVectorsTable()]


def ddl_columns(sql_files: list[str]) -> dict[str, list[tuple[str, str]]]:
    """Table name -> [(column, type as Snowflake SQL)] after applying the files in order
    (CREATE TABLE, ALTER TABLE … ADD COLUMN; ALTER TABLE … SET changes no column)."""
    tables: dict[str, list[tuple[str, str]]] = {}
    for sql in sql_files:
        for statement in sqlglot.parse(sql, read="snowflake"):
            if isinstance(statement, exp.Create) and statement.kind == "TABLE":
                schema = statement.this
                assert isinstance(schema, exp.Schema), statement.sql()
                cols = [c for c in schema.expressions if isinstance(c, exp.ColumnDef)]
                tables[schema.this.name.upper()] = [(c.name, _type(c)) for c in cols]
            elif isinstance(statement, exp.Alter) and statement.kind == "TABLE":
                for action in statement.args.get("actions") or []:
                    if isinstance(action, exp.AlterSet):
                        continue  # table properties (Time Travel retention), not columns
                    assert isinstance(action, exp.ColumnDef), f"not understood here: {action.sql()}"
                    tables[statement.this.name.upper()].append((action.name, _type(action)))
    return tables


def _type(col: exp.ColumnDef) -> str:
    kind = col.args.get("kind")
    assert isinstance(kind, exp.DataType), col.sql()
    return kind.sql("snowflake")


def staged_type(column: Column) -> str:
    """The DDL type (as sqlglot writes it) that holds what `Column.extract` stages."""
    match column.kind:
        case "version":
            return "DECIMAL(38)"
        case "int":
            return f"DECIMAL({column.precision}, 0)"
        case "float":
            return "DOUBLE"
        case "ts":
            return "TIMESTAMPNTZ"
        case "bool":
            return "BOOLEAN"
        case "variant":
            return "VARIANT"
        case "str":
            return "VARCHAR"


def mismatches(table: TableSpec, ddl: dict[str, list[tuple[str, str]]]) -> list[str]:
    created = ddl.get(table.name)
    if created is None:
        return [f"no CREATE TABLE for {table.name}"]
    declared = [(c.name, staged_type(c)) for c in table.columns] + [(LOADED_AT, "TIMESTAMPNTZ")]
    # VARCHAR lengths are the DDL's own (the records bound their ids elsewhere).
    found = [(n, "VARCHAR" if t.startswith("VARCHAR") else t) for n, t in created]
    # A column added by a later migration lands after loaded_at in the table and before it in the
    # declaration (loaded_at is the declaration's last): compare with loaded_at moved last.
    found = [c for c in found if c[0] != LOADED_AT] + [c for c in found if c[0] == LOADED_AT]
    if [n for n, _ in found] != [n for n, _ in declared]:
        return [f"{table.name} columns: DDL {[n for n, _ in found]} != declared {[n for n, _ in declared]}"]
    pairs = zip(found, declared, strict=True)
    return [f"{table.name}.{n}: DDL {t} != declared {d}" for (n, t), (_, d) in pairs if t != d]


def test_the_migrations_create_the_declared_columns() -> None:
    assert MIGRATIONS
    ddl = ddl_columns([p.read_text(encoding="utf-8") for p in MIGRATIONS])
    for table in TABLES:
        assert mismatches(table, ddl) == []


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("    agent_id VARCHAR(128),\n", ""), "MEMORY_RECORDS columns"),  # a column dropped
        (("ttl_seconds NUMBER(18, 0)", "ttl_seconds NUMBER(10, 0)"), "MEMORY_RECORDS.ttl_seconds"),
        (("success BOOLEAN", "success VARCHAR(5)"), "AUDIT_LOGS.success"),
        (("    user_id VARCHAR(128),\n", "    session_id VARCHAR(128),\n    user_id VARCHAR(128),\n"), "columns"),
    ],
)
def test_a_ddl_that_drifts_from_the_declaration_is_caught(edit: tuple[str, str], expected: str) -> None:
    texts = [p.read_text(encoding="utf-8") for p in MIGRATIONS]
    assert edit[0] in texts[0]
    texts[0] = texts[0].replace(edit[0], edit[1], 1)
    ddl = ddl_columns(texts)
    found = [m for table in TABLES for m in mismatches(table, ddl)]
    assert any(expected in m for m in found), found


def test_a_column_added_by_a_later_migration_counts() -> None:
    texts = [p.read_text(encoding="utf-8") for p in MIGRATIONS]
    texts.append("ALTER TABLE AI_MEMORY.AUDIT_LOGS ADD COLUMN extra_note VARCHAR(64);\n")
    assert any("AUDIT_LOGS columns" in m for m in mismatches(AuditLogsTable(), ddl_columns(texts)))


def test_reads_select_every_declared_column() -> None:
    selected = [part.strip() for part in SELECT_RECORDS.split(",")]
    assert selected[: len(MemoryRecordsTable.columns)] == [c.name for c in MemoryRecordsTable.columns]

"""The Snowflake sink, split by job: `tables` (each table's columns, declared once, and the SQL
built from them), `check` (the canonical-record check), `parse` (values to staging rows, chunks),
`errors` (what a failure means), `sink` (the I/O), `read` (rows back to records)."""

from sinks.warehouse.errors import ErrorKind, classify
from sinks.warehouse.parse import Rejected, Row, Tombstone, chunks, parse
from sinks.warehouse.read import SELECT_RECORDS, row_to_record
from sinks.warehouse.sink import STAGE, FlushResult, MergeCounts, WarehouseSink
from sinks.warehouse.tables import AuditLogsTable, Column, MemoryRecordsTable, MemoryVectorsTable, TableSpec

__all__ = [
    "SELECT_RECORDS",
    "STAGE",
    "AuditLogsTable",
    "Column",
    "ErrorKind",
    "FlushResult",
    "MemoryRecordsTable",
    "MemoryVectorsTable",
    "MergeCounts",
    "Rejected",
    "Row",
    "TableSpec",
    "Tombstone",
    "WarehouseSink",
    "chunks",
    "classify",
    "parse",
    "row_to_record",
]

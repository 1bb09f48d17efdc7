"""The Snowflake sink (stage + MERGE) and the warehouse's MEMORY_RECORDS / AUDIT_LOGS tables."""

from sinks.warehouse.sink import (
    STAGE,
    AuditLogsTable,
    FlushResult,
    MemoryRecordsTable,
    Rejected,
    Row,
    WarehouseSink,
    classify,
    parse,
)

__all__ = [
    "STAGE",
    "AuditLogsTable",
    "FlushResult",
    "MemoryRecordsTable",
    "Rejected",
    "Row",
    "WarehouseSink",
    "classify",
    "parse",
]

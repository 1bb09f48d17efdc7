"""The warehouse tables (pure): each table's staged columns, declared once, and the SQL built from them.

A column's kind says how it is staged (`extract`, from the one-VARIANT staging table) and how it
reads back. `deploy/snowflake/` creates the tables; a unit test holds its DDL to these columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

import orjson

from app.models import SUPERSEDING_TYPES, VERSION_WIDTH, AuditEntry, MemoryRecord
from sinks.warehouse.check import canonical_row

ColumnKind = Literal["str", "version", "int", "float", "ts", "bool", "variant"]
LOADED_AT = "loaded_at"  # every table's last column: stamped by the MERGE, never staged
_ZERO = timedelta(0)


@dataclass(frozen=True)
class Column:
    name: str
    kind: ColumnKind
    precision: int = 18

    def extract(self) -> str:
        """The staging expression for this column (`v` is the staged VARIANT)."""
        path = f"v:{self.name}"
        match self.kind:
            case "str":
                return f"{path}::STRING"
            case "version":
                # 32-digit versions, exactly. NUMBER(38) is NUMBER(38, 0) to Snowflake, but the
                # emulator turns a (38, 0) cast into a 64-bit integer, and TO_NUMBER inside a MERGE
                # into a double: both would lose digits.
                return f"CAST({path}::STRING AS NUMBER(38))"
            case "int":
                return f"{path}::NUMBER({self.precision}, 0)"
            case "float":
                return f"{path}::FLOAT"
            case "ts":
                return f"{path}::TIMESTAMP_NTZ"
            case "bool":
                return f"{path}::BOOLEAN"
            case "variant":
                return path


class TableSpec(Protocol):
    name: str
    columns: tuple[Column, ...]

    def to_row(self, value: bytes) -> tuple[dict[str, Any], str, bool]:
        """Staging dict, tenant id, grouped; raises ValueError for a value that is not a valid row."""
        ...

    def merge_sql(self, target: str, stage_table: str) -> str: ...

    def post_sql(self, target: str, stage_table: str) -> str | None: ...


def ntz(dt: datetime | None) -> str | None:
    """TIMESTAMP_NTZ columns hold UTC wall-clock time."""
    if dt is None:
        return None
    if dt.tzinfo is not None:
        dt = (dt if dt.utcoffset() == _ZERO else dt.astimezone(UTC)).replace(tzinfo=None)
    return dt.isoformat(sep=" ")


def _compact(d: dict[str, Any]) -> dict[str, Any]:
    # Absent keys stage as SQL NULL; a JSON null would stage as a VARIANT null, which IS NOT NULL.
    return {k: v for k, v in d.items() if v is not None}


def _select(columns: Sequence[Column], stage_table: str, key: Sequence[str], order: str) -> str:
    """The staged batch as typed columns, one row per key (the latest by `order`).

    QUALIFY repeats the expressions instead of naming the aliases: the emulator cannot bind
    aliases there."""
    by_name = {c.name: c.extract() for c in columns}
    exprs = ",\n        ".join(f"{c.extract()} AS {c.name}" for c in columns)
    partition = ", ".join(by_name[k] for k in key)
    order_by = " ".join(by_name.get(w, w) for w in order.split())
    return (
        f"SELECT\n        {exprs}\n    FROM {stage_table}\n"
        f"    QUALIFY ROW_NUMBER() OVER (PARTITION BY {partition} ORDER BY {order_by}) = 1"
    )


def _insert(names: Sequence[str]) -> str:
    return (
        f"WHEN NOT MATCHED THEN INSERT ({', '.join(names)}, {LOADED_AT})\n"
        f"    VALUES ({', '.join('src.' + n for n in names)}, SYSDATE())"
    )


class MemoryRecordsTable:
    """MEMORY_RECORDS: one row per (tenant_id, id); newer versions win, deletes are soft."""

    name: str = "MEMORY_RECORDS"
    columns: tuple[Column, ...] = (
        Column("tenant_id", "str"),
        Column("id", "str"),
        Column("version", "version"),
        Column("event_id", "str"),
        Column("type", "str"),
        Column("key", "str"),
        Column("content", "variant"),
        Column("metadata", "variant"),
        Column("agent_id", "str"),
        Column("user_id", "str"),
        Column("session_id", "str"),
        Column("channel_id", "str"),
        Column("visibility", "str"),
        Column("citations", "variant"),
        Column("importance", "float"),
        Column("ttl_seconds", "int", 18),
        Column("superseded_by", "str"),
        Column("redactions", "variant"),
        Column("occurred_at", "ts"),
        Column("created_at", "ts"),
        Column("updated_at", "ts"),
        Column("deleted_at", "ts"),
        Column("source_partition", "int", 10),
        Column("source_offset", "int", 20),
        Column("request_id", "str"),
    )
    # What a delete forgets: the content and everything that describes or names whom it is about.
    # A tombstone row keeps ids, version, type, visibility and times (idempotency and audit).
    FORGOTTEN: dict[str, Any] = {
        "content": None,
        "metadata": {},
        "key": None,
        "agent_id": None,
        "user_id": None,
        "session_id": None,
        "channel_id": None,
        "citations": [],
        "importance": None,
        "redactions": {},
    }
    # A delete (tombstone) moves the version, the deletion times and the request id (the row names
    # the request that last changed it), and clears what it forgets (staged empty by `to_row`);
    # the type, visibility and supersession stay.
    ALWAYS = frozenset(
        {
            "version",
            "event_id",
            "updated_at",
            "deleted_at",
            "source_partition",
            "source_offset",
            "request_id",
            *FORGOTTEN,
        }
    )
    KEYS = frozenset({"tenant_id", "id"})
    TIMESTAMPS = tuple(c.name for c in columns if c.kind == "ts")

    @classmethod
    def row(cls, rec: MemoryRecord, raw: dict[str, Any] | None = None) -> dict[str, Any]:
        """The staging dict. `raw` is the record's own JSON, already validated as `rec`: reusing it
        is cheaper than serializing the model again."""
        d = raw if raw is not None else rec.model_dump(mode="json")
        d = {k: v for k, v in d.items() if v is not None}
        d["id"] = d.pop("memory_id")
        d.pop("source", None)
        for name in cls.TIMESTAMPS:
            text = d.get(name)
            if text is not None:
                # UTC serializes with a "Z": strip it; anything else goes through the parsed value.
                ok = isinstance(text, str) and text.endswith("Z")
                d[name] = text[:-1].replace("T", " ", 1) if ok else ntz(getattr(rec, name))
        if rec.source is not None:
            d["source_partition"] = rec.source.partition
            d["source_offset"] = rec.source.offset
        return d

    def to_row(self, value: bytes) -> tuple[dict[str, Any], str, bool]:
        fast = canonical_row(value)
        staged, tenant, grouped = fast if fast is not None else self.model_row(value)
        if staged.get("deleted_at") is not None:
            # A delete stages as a tombstone whatever the record carries (one written before
            # deletes forgot, replayed from the topic, included).
            staged = self.forgotten(staged)
        return staged, tenant, grouped

    @classmethod
    def forgotten(cls, staged: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in staged.items() if k not in cls.FORGOTTEN}
        out.update((k, v) for k, v in cls.FORGOTTEN.items() if v is not None)
        return out

    @classmethod
    def model_row(cls, value: bytes) -> tuple[dict[str, Any], str, bool]:
        """`to_row` through the model: any valid record, or ValidationError with the reason."""
        rec = MemoryRecord.from_json(value)  # the contract check; the staged values come from `value`
        grouped = rec.type in SUPERSEDING_TYPES and rec.key is not None and not rec.deleted
        return cls.row(rec, orjson.loads(value)), rec.tenant_id, grouped

    @classmethod
    def select_list(cls) -> str:
        """Every column, for reading rows back (`sinks.warehouse.read`). The emulator returns NULL
        timestamps as 1970-01-01, so whether a row is deleted is asked for explicitly."""
        return ", ".join(c.name for c in cls.columns) + ", deleted_at IS NOT NULL AS is_deleted"

    def merge_sql(self, target: str, stage_table: str) -> str:
        names = [c.name for c in self.columns]
        src = _select(self.columns, stage_table, ("tenant_id", "id"), "version DESC")
        # A tombstone is a record with deleted_at and no content. (Spelled with columns the
        # INSERT also uses: the emulator's MERGE only carries those source columns along.)
        tombstone = "src.deleted_at IS NOT NULL AND src.content IS NULL"
        sets = []
        for n in names:
            if n in self.KEYS:
                continue
            if n in self.ALWAYS:
                sets.append(f"{n} = src.{n}")
            elif n == "created_at":
                sets.append("created_at = COALESCE(tgt.created_at, src.created_at)")
            else:
                sets.append(f"{n} = IFF({tombstone}, tgt.{n}, src.{n})")
        sets.append(f"{LOADED_AT} = SYSDATE()")
        set_sql = ",\n    ".join(sets)
        return (
            f"MERGE INTO {target} AS tgt\nUSING (\n    {src}\n) AS src\n"
            "ON tgt.tenant_id = src.tenant_id AND tgt.id = src.id\n"
            f"WHEN MATCHED AND src.version > tgt.version THEN UPDATE SET\n    {set_sql}\n"
            f"{_insert(names)}"
        )

    def post_sql(self, target: str, stage_table: str) -> str:
        """Supersession: within each (tenant, type, key) the batch touched, the newest row supersedes
        every older row not yet marked (a deleted row never wins). The ingest agent marks a record
        that arrives late, but it does not republish the older record when a newer one arrives:
        that is recorded here."""
        types = ", ".join(f"'{t.value}'" for t in sorted(SUPERSEDING_TYPES))
        return f"""UPDATE {target} AS tgt
SET superseded_by = w.id
FROM (
    SELECT r.tenant_id, r.type, r.key, r.id, r.version
    FROM {target} AS r
    INNER JOIN (
        SELECT DISTINCT
            v:tenant_id::STRING AS tenant_id,
            v:type::STRING AS type,
            v:key::STRING AS key
        FROM {stage_table}
        WHERE v:type::STRING IN ({types}) AND v:key IS NOT NULL
    ) AS g
        ON r.tenant_id = g.tenant_id AND r.type = g.type AND r.key = g.key
    WHERE r.deleted_at IS NULL
    QUALIFY ROW_NUMBER() OVER (PARTITION BY r.tenant_id, r.type, r.key ORDER BY r.version DESC) = 1
) AS w
WHERE tgt.tenant_id = w.tenant_id
    AND tgt.type = w.type
    AND tgt.key = w.key
    AND tgt.id <> w.id
    AND tgt.version < w.version
    AND tgt.superseded_by IS NULL"""


class AuditLogsTable:
    """AUDIT_LOGS: one row per audited action, keyed by log_id; entries never change."""

    name: str = "AUDIT_LOGS"
    columns: tuple[Column, ...] = (
        Column("log_id", "str"),
        Column("ts", "ts"),
        Column("tenant_id", "str"),
        Column("principal", "str"),
        Column("action", "str"),
        Column("resource_type", "str"),
        Column("resource_ids", "variant"),
        Column("success", "bool"),
        Column("status_code", "int", 3),
        Column("latency_ms", "float"),
        Column("request_id", "str"),
        Column("details", "variant"),
    )

    @staticmethod
    def row(entry: AuditEntry) -> dict[str, Any]:
        d = entry.model_dump(mode="json")
        d["ts"] = ntz(entry.ts)
        return _compact(d)

    def to_row(self, value: bytes) -> tuple[dict[str, Any], str, bool]:
        entry = AuditEntry.model_validate_json(value)
        return self.row(entry), entry.tenant_id, False

    def merge_sql(self, target: str, stage_table: str) -> str:
        names = [c.name for c in self.columns]
        src = _select(self.columns, stage_table, ("log_id",), "ts")
        return f"MERGE INTO {target} AS tgt\nUSING (\n    {src}\n) AS src\nON tgt.log_id = src.log_id\n{_insert(names)}"

    def post_sql(self, target: str, stage_table: str) -> str | None:
        return None


class MemoryVectorsTable:
    """MEMORY_VECTORS: one row per (tenant_id, id), the embedding of the memory's `version`.

    Staged by the embedding agent (`agents.embed`): a write carries model, dims and the vector
    (base64 of little-endian float16); a drop (the memory was deleted) carries only the delete's
    version, and leaves the row without a vector. A newer version always wins; a replay changes
    nothing. With `reembed` (`memstream reembed`, as Lua.VECTORS' `r`), the same version with a
    vector of another model replaces it too; the agent's own vector never replaces a re-embedding.
    """

    def __init__(self, reembed: bool = False) -> None:
        self.reembed = reembed

    name: str = "MEMORY_VECTORS"
    columns: tuple[Column, ...] = (
        Column("tenant_id", "str"),
        Column("id", "str"),
        Column("version", "version"),
        Column("model", "str"),
        Column("dims", "int", 5),
        Column("vector", "str"),
    )

    @staticmethod
    def row(
        tenant_id: str, memory_id: str, version: str, model: str | None, dims: int | None, vector: str | None
    ) -> dict[str, Any]:
        """The staging dict of one vector (all of model, dims and vector), or of a drop (none)."""
        return _compact(
            {
                "tenant_id": tenant_id,
                "id": memory_id,
                "version": version,
                "model": model,
                "dims": dims,
                "vector": vector,
            }
        )

    def to_row(self, value: bytes) -> tuple[dict[str, Any], str, bool]:
        d = orjson.loads(value)
        if not isinstance(d, dict):
            raise ValueError("a vector row is a JSON object")
        tenant, mid, version = d.get("tenant_id"), d.get("id"), d.get("version")
        if not (isinstance(tenant, str) and tenant and isinstance(mid, str) and mid):
            raise ValueError("a vector row needs tenant_id and id")
        if not (isinstance(version, str) and len(version) == VERSION_WIDTH and version.isdigit()):
            raise ValueError(f"version must be {VERSION_WIDTH} digits")
        parts = [d.get("model"), d.get("dims"), d.get("vector")]
        if any(p is not None for p in parts) and not (
            isinstance(parts[0], str) and isinstance(parts[1], int) and isinstance(parts[2], str)
        ):
            raise ValueError("a vector row has model, dims and vector, or none of them")
        return self.row(tenant, mid, version, *parts), tenant, False

    def merge_sql(self, target: str, stage_table: str) -> str:
        names = [c.name for c in self.columns]
        src = _select(self.columns, stage_table, ("tenant_id", "id"), "version DESC")
        # Same version, another model: a re-embedding (never over a dropped vector, never a drop).
        when = "src.version > tgt.version"
        if self.reembed:  # never over a dropped vector, never a drop
            when += (
                " OR (src.version = tgt.version AND src.vector IS NOT NULL AND tgt.vector IS NOT NULL"
                " AND (src.model <> tgt.model OR src.dims <> tgt.dims))"
            )
        sets = ",\n    ".join(
            [*(f"{n} = src.{n}" for n in names if n not in ("tenant_id", "id")), f"{LOADED_AT} = SYSDATE()"]
        )
        return (
            f"MERGE INTO {target} AS tgt\nUSING (\n    {src}\n) AS src\n"
            "ON tgt.tenant_id = src.tenant_id AND tgt.id = src.id\n"
            f"WHEN MATCHED AND ({when}) THEN UPDATE SET\n    {sets}\n"
            f"{_insert(names)}"
        )

    def post_sql(self, target: str, stage_table: str) -> str | None:
        return None

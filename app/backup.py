"""`memstream backup export|restore`: the warehouse's memories as JSON Lines files, and back.

Export streams MEMORY_RECORDS (one tenant, or every tenant) in batches, one file per tenant
(`tenant-<id>.jsonl`, or `.jsonl.gz`), one canonical record per line: the same JSON as a
`memory.records` message, so the file is read by the same code as the topic. A `manifest.json`
says what was exported, as of when and how. Memory use does not grow with the table.

As of a time: on a warehouse with Time Travel (real Snowflake) the table is read
`AT(TIMESTAMP => as_of)`, the warehouse's own history. Elsewhere (the local emulator) the table
holds the newest version of each memory only, so `as_of` is event time over the versions held:
memories written after it are left out, supersession is worked out again among the memories
written by then, and a memory changed after it (a later delete or update) is left out and
counted as `not_held` — its version at `as_of` is gone.

Restore writes the records straight back into the warehouse through the sink's staging MERGE
(version-guarded: restoring twice, or onto newer data, changes nothing), then refills the hotset
of the restored tenants from the warehouse (`memstream rebuild`). Ids, versions, supersessions and
deletions are the exported ones. Replaying them as events would mint new versions from new
offsets and run dedupe again: docs/backup.md says why this path is the one taken.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from app.settings import Settings

log = logging.getLogger(__name__)

BATCH = 1000
MANIFEST = "manifest.json"
FORMAT = "memstream-backup/1"
PREFIX = "tenant-"


class BackupError(RuntimeError):
    pass


@dataclass
class ExportReport:
    format: str = FORMAT
    exported_at: str = ""
    as_of: str | None = None
    as_of_basis: str = "now"  # "now", "time_travel" (warehouse history) or "event_time" (versions held)
    tenants: dict[str, int] = field(default_factory=dict)  # tenant -> records written
    files: dict[str, str] = field(default_factory=dict)  # tenant -> file name
    not_yet_written: int = 0
    not_held: int = 0

    @property
    def records(self) -> int:
        return sum(self.tenants.values())


@dataclass
class RestoreReport:
    tenants: dict[str, int] = field(default_factory=dict)
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    hotset_restored: int = 0


# ---- pure parts ----------------------------------------------------------------------------------


def file_name(tenant: str, compressed: bool) -> str:
    return f"{PREFIX}{tenant}.jsonl" + (".gz" if compressed else "")


def ntz_text(dt: datetime) -> str:
    """A time as the TIMESTAMP_NTZ (UTC) columns hold it."""
    return dt.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")


def parse_time(text: str) -> datetime:
    """RFC 3339 / ISO 8601; a time without an offset is UTC."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BackupError(f"--as-of: not an ISO 8601 time: {text!r}") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def as_of_held(row: dict[str, Any], as_of: datetime) -> str:
    """What a held row is at `as_of` (event time): "keep", "later" (written after it) or
    "not_held" (changed after it: the version then is not held). A tombstone without content
    (its delete reached the warehouse in the same batch as the memory) says nothing of when the
    memory was written: not held either."""
    if _utc(row["created_at"]) > as_of:
        return "not_held" if row.get("is_deleted") and row.get("content") is None else "later"
    if _utc(row["updated_at"]) > as_of:
        return "not_held"
    return "keep"


def _group(row: dict[str, Any]) -> tuple[str, str, str] | None:
    from app.models import SUPERSEDING_TYPES

    kind, key = row.get("type"), row.get("key")
    if key is None or kind not in {t.value for t in SUPERSEDING_TYPES}:
        return None
    return (row["tenant_id"], kind, key)


def _supersede(group: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Supersession within one (tenant, type, key) as it stood: the newest live row is active and
    supersedes the older ones, as the sink's supersession pass records it."""
    live = [r for r in group if not r.get("is_deleted")]
    winner = max(live, key=lambda r: int(r["version"])) if live else None
    for row in group:
        older = winner is not None and int(row["version"]) < int(winner["version"])
        row["superseded_by"] = winner["id"] if older and winner is not None else None
    return group


def at_event_time(rows: Iterable[dict[str, Any]], as_of: datetime, report: ExportReport) -> Iterator[dict[str, Any]]:
    """The held rows as they stood at `as_of` (event time). `rows` come ordered by tenant, type,
    key, version: one superseding group at a time is held in memory."""
    group: list[dict[str, Any]] = []
    group_id: tuple[str, str, str] | None = None
    for row in rows:
        what = as_of_held(row, as_of)
        if what != "keep":
            report.not_yet_written += what == "later"
            report.not_held += what == "not_held"
            continue
        gid = _group(row)
        if gid != group_id and group:
            yield from _supersede(group)
            group = []
        group_id = gid
        if gid is None:
            yield row
        else:
            group.append(row)
    if group:
        yield from _supersede(group)


def _utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # TIMESTAMP_NTZ holds UTC


def select_sql(time_travel: bool, tenant: bool) -> str:
    """The export query: every column and whether the row is deleted, a tenant at a time and each
    (type, key) group's versions together."""
    from sinks.warehouse import SELECT_RECORDS, MemoryRecordsTable

    at = " AT(TIMESTAMP => ?::TIMESTAMP_TZ)" if time_travel else ""
    return (
        f"SELECT {SELECT_RECORDS} FROM {MemoryRecordsTable.name}{at}"
        + (" WHERE tenant_id = ?" if tenant else "")
        + " ORDER BY tenant_id, type, key, version, id"
    )


# ---- export --------------------------------------------------------------------------------------


def _rows(cur: Any, sql: str, params: list[Any], slow_s: float) -> Iterator[dict[str, Any]]:
    from sinks.warehouse.timing import execute

    execute(cur, "backup_export", sql, params, slow_s=slow_s)
    names = [d.name.lower() for d in cur.description or ()]
    while rows := cur.fetchmany(BATCH):
        for row in rows:
            yield dict(zip(names, row, strict=True))


def _open(path: Path, compressed: bool) -> io.BufferedIOBase:
    if compressed:
        return gzip.GzipFile(path, "wb", compresslevel=6)
    return path.open("wb")


def export(
    settings: Settings,
    out: Path,
    tenant: str | None = None,
    as_of: datetime | None = None,
    compressed: bool = False,
) -> ExportReport:
    """Write the memories to `out` (created; existing tenant files are replaced)."""
    import snowflake.connector

    from app.migrate import has_time_travel
    from app.snowflake_conn import connect_kwargs
    from sinks.warehouse import row_to_record

    out.mkdir(parents=True, exist_ok=True)
    report = ExportReport(exported_at=datetime.now(UTC).isoformat())
    conn = snowflake.connector.connect(**connect_kwargs(settings), paramstyle="qmark")
    try:
        cur = conn.cursor()
        time_travel = as_of is not None and has_time_travel(cur, settings.snowflake_database)
        params: list[Any] = []
        if as_of is not None:
            report.as_of = as_of.isoformat()
            report.as_of_basis = "time_travel" if time_travel else "event_time"
            if time_travel:
                params.append(as_of.isoformat())
        if tenant is not None:
            params.append(tenant)
        sql = select_sql(time_travel, tenant is not None)
        with ExitStack() as files:
            current: str | None = None
            sink: io.BufferedIOBase | None = None
            rows = _rows(cur, sql, params, settings.warehouse_slow_query_s)
            if as_of is not None and not time_travel:
                rows = at_event_time(rows, as_of, report)
            for row in rows:
                rec = row_to_record(row, settings.topic_events)
                if rec.tenant_id != current:
                    files.close()
                    current = rec.tenant_id
                    name = file_name(current, compressed)
                    sink = files.enter_context(_open(out / name, compressed))
                    report.files[current] = name
                    report.tenants[current] = 0
                assert sink is not None
                sink.write(rec.to_json() + b"\n")
                report.tenants[current] += 1
    finally:
        conn.close()
    (out / MANIFEST).write_bytes(orjson.dumps(asdict(report), option=orjson.OPT_INDENT_2))
    return report


# ---- restore -------------------------------------------------------------------------------------


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not path.is_file():
        raise BackupError(f"{path} is missing: not a memstream backup directory")
    manifest: dict[str, Any] = orjson.loads(path.read_bytes())
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


def backup_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        for number, line in enumerate(fh, 1):
            line = line.strip()
            if line:
                yield number, line


def restore(
    settings: Settings, directory: Path, tenant: str | None = None, rebuild_hotset: bool = True
) -> RestoreReport:
    """MERGE every exported record back into the warehouse, then rebuild those tenants' hotset."""
    from app.rebuild import rebuild
    from sinks.warehouse import FlushResult, MemoryRecordsTable, WarehouseSink

    manifest = read_manifest(directory)
    files: dict[str, str] = manifest["files"]
    if tenant is not None:
        if tenant not in files:
            raise BackupError(f"tenant {tenant!r} is not in this backup")
        files = {tenant: files[tenant]}
    report = RestoreReport()
    sink = WarehouseSink(settings, MemoryRecordsTable())
    try:
        for name_tenant, name in files.items():
            result = FlushResult()
            count = 0
            for number, line in backup_lines(directory / name):
                rejected = sink.add(line, name, 0, number)
                if rejected is not None:
                    raise BackupError(f"{name} line {number}: {rejected.reason}")
                count += 1
                if len(sink.pending) >= settings.sink_batch_max_rows:
                    sink.flush(result)
            sink.flush(result)
            if sink.rejected:
                report.rejected += len(sink.rejected)
                sink.rejected.clear()
            report.tenants[name_tenant] = count
            report.inserted += result.counts.inserted
            report.updated += result.counts.updated
            report.unchanged += result.counts.unchanged
    finally:
        sink.close()
    if rebuild_hotset:
        for name_tenant in report.tenants:
            counts = asyncio.run(rebuild(settings, name_tenant))
            report.hotset_restored += counts["restored"]
    return report


# ---- CLI -----------------------------------------------------------------------------------------


def run_export(settings: Settings, out: Path, tenant: str | None, as_of: str | None, compressed: bool) -> int:
    started = time.monotonic()
    try:
        report = export(settings, out, tenant, parse_time(as_of) if as_of else None, compressed)
    except BackupError as exc:
        print(f"backup: {exc}", file=sys.stderr)
        return 2
    basis = f" as of {report.as_of} ({report.as_of_basis})" if report.as_of else ""
    print(
        f"exported {report.records} memories of {len(report.tenants)} tenants to {out}{basis} "
        f"({time.monotonic() - started:.1f}s)"
    )
    if report.not_held:
        print(
            f"warning: {report.not_held} memories changed after --as-of and their version then is not held "
            "(no Time Travel on this warehouse): left out",
            file=sys.stderr,
        )
    return 0


def run_restore(settings: Settings, directory: Path, tenant: str | None, rebuild_hotset: bool) -> int:
    started = time.monotonic()
    try:
        report = restore(settings, directory, tenant, rebuild_hotset)
    except BackupError as exc:
        print(f"backup: {exc}", file=sys.stderr)
        return 2
    total = sum(report.tenants.values())
    print(
        f"restored {total} memories of {len(report.tenants)} tenants: {report.inserted} inserted, "
        f"{report.updated} updated, {report.unchanged} unchanged, {report.rejected} rejected; "
        f"hotset: {report.hotset_restored} memories refilled ({time.monotonic() - started:.1f}s)"
    )
    return 1 if report.rejected else 0

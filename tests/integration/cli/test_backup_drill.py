"""Restore drill: a tenant with thousands of memories, decisions superseding each other and
deletions goes through the real pipeline; `memstream backup export` writes it out, the tenant's
warehouse rows and hotset are wiped, `memstream backup restore` brings back the same rows."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from app.cli import main
from app.models import derive_memory_id
from app.settings import Settings, get_settings
from sinks.warehouse import MemoryRecordsTable
from tests.support.kafka import publish
from tests.support.stack import Proc, Stack, stored, wait_until
from tests.support.warehouse import query

EVENTS = 2000
KEYS = 10
VERSIONS = 3
DELETES = 25
COLUMNS = [c.name for c in MemoryRecordsTable.columns]


def table_snapshot(settings: Settings, tenant: str) -> list[tuple[Any, ...]]:
    """Every column of the tenant's rows but the load time; VARIANTs compared as parsed JSON."""
    exprs = ["version::STRING" if c == "version" else c for c in COLUMNS] + ["deleted_at IS NOT NULL"]
    rows = query(settings, f"SELECT {', '.join(exprs)} FROM MEMORY_RECORDS WHERE tenant_id = %s ORDER BY id", [tenant])
    variants = {i for i, c in enumerate(COLUMNS) if c in ("content", "metadata", "citations", "redactions")}
    return [
        tuple(orjson.loads(v) if i in variants and isinstance(v, str) else v for i, v in enumerate(row)) for row in rows
    ]


@pytest.fixture
def cli_env(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for k, v in stack.env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def lines(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rb") as fh:
        return [orjson.loads(line) for line in fh]


def test_export_wipe_restore_gives_back_the_same_rows(
    worker: Proc,
    settings: Settings,
    rds: redis.Redis,
    tenant: str,
    cli_env: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)

    def at(seconds: float) -> str:
        return (base + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")

    def ev(eid: str, seconds: float, **kw: Any) -> dict[str, Any]:
        body = {
            "schema_version": 1,
            "event_id": eid,
            "tenant_id": tenant,
            "type": "event",
            "session_id": f"s{int(seconds) % 20}",
            "content": {"text": f"drill note {eid} on topic {int(seconds) % 37}"},
            "occurred_at": at(seconds),
        }
        body.update(kw)
        return body

    events = [ev(f"e{i}", i) for i in range(EVENTS)]
    events += [
        ev(f"d{k}-{v}", 2100 + k * 10 + v, type="decision", key=f"k{k}", content={"text": f"decision {k} v{v}"})
        for k in range(KEYS)
        for v in range(VERSIONS)
    ]
    gone = [derive_memory_id(tenant, f"e{i}") for i in range(DELETES)]
    events += [
        {
            "schema_version": 1,
            "event_id": f"del{i}",
            "tenant_id": tenant,
            "op": "delete",
            "memory_id": mid,
            "occurred_at": at(2500 + i),
        }
        for i, mid in enumerate(gone)
    ]
    publish(settings, events)
    total = EVENTS + KEYS * VERSIONS

    def settled() -> bool:
        (n, deleted, superseded), *_ = query(
            settings,
            "SELECT COUNT(*), COUNT(deleted_at), COUNT(superseded_by) FROM MEMORY_RECORDS WHERE tenant_id = %s",
            [tenant],
        )
        return (int(n), int(deleted), int(superseded)) == (total, DELETES, KEYS * (VERSIONS - 1))

    wait_until(settled, timeout_s=300, interval_s=1.0)
    before = table_snapshot(settings, tenant)
    assert len(before) == total
    live = derive_memory_id(tenant, f"e{EVENTS - 1}")
    wait_until(lambda: stored(rds, tenant, live) is not None, timeout_s=120)

    # Export (gzip) now, and as of a moment between the first two versions of decision k0.
    out, then = tmp_path / "now", tmp_path / "then"
    assert main(["backup", "export", "--tenant", tenant, "--out", str(out), "--gzip"]) == 0
    assert main(["backup", "export", "--tenant", tenant, "--out", str(then), "--as-of", at(2101.5)]) == 0
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert manifest["tenants"] == {tenant: total} and manifest["as_of"] is None
    exported = lines(out / manifest["files"][tenant])
    assert len(exported) == total and sum(r["deleted_at"] is not None for r in exported) == DELETES

    past = orjson.loads((then / "manifest.json").read_bytes())
    assert past["as_of_basis"] == "event_time"
    assert past["not_held"] == DELETES  # deleted after as-of: their version then is gone
    assert past["not_yet_written"] == KEYS * VERSIONS - 2
    then_rows = {r["event_id"]: r for r in map(orjson.loads, (then / past["files"][tenant]).read_bytes().splitlines())}
    assert len(then_rows) == EVENTS - DELETES + 2
    assert then_rows["d0-0"]["superseded_by"] == then_rows["d0-1"]["memory_id"]
    assert then_rows["d0-1"]["superseded_by"] is None

    # Lose the tenant: warehouse rows and hotset.
    query(settings, "DELETE FROM MEMORY_RECORDS WHERE tenant_id = %s", [tenant])
    doomed = list(rds.scan_iter(match=f"ms:{{{tenant}}}:*", count=1000))
    assert doomed
    rds.delete(*doomed)
    assert table_snapshot(settings, tenant) == [] and stored(rds, tenant, live) is None

    capsys.readouterr()
    assert main(["backup", "restore", str(out)]) == 0
    assert f"{total} inserted, 0 updated" in capsys.readouterr().out
    assert table_snapshot(settings, tenant) == before
    assert stored(rds, tenant, live) is not None
    assert stored(rds, tenant, gone[0]) is None  # deleted memories stay out of the hotset

    # Restoring again changes nothing.
    assert main(["backup", "restore", str(out), "--tenant", tenant]) == 0
    assert f"0 inserted, 0 updated, {total} unchanged" in capsys.readouterr().out
    assert table_snapshot(settings, tenant) == before


def test_restore_refuses_what_is_not_a_backup(
    cli_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["backup", "restore", str(tmp_path)]) == 2
    assert "not a memstream backup directory" in capsys.readouterr().err
    assert main(["backup", "export", "--out", str(tmp_path), "--as-of", "yesterday"]) == 2
    assert "not an ISO 8601 time" in capsys.readouterr().err

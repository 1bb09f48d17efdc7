from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import redis

from app.cli import main
from app.models import derive_memory_id
from sinks.hotset import keys
from tests.support.stack import Proc, Stack, stored, wait_until


def test_import_publishes_valid_lines_and_reports_invalid(
    worker: Proc,
    stack: Stack,
    rds: redis.Redis,
    tenant: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from app.settings import get_settings

    for k, v in stack.env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    good = [
        {
            "schema_version": 1,
            "event_id": f"imp{i}",
            "tenant_id": tenant,
            "type": "event",
            "content": {"text": f"imported {i}"},
            "occurred_at": "2026-05-01T00:00:00Z",
        }
        for i in range(3)
    ]
    f = tmp_path / "events.jsonl"
    f.write_bytes(
        b"\n".join(
            [
                orjson.dumps(good[0]),
                b"{broken",
                orjson.dumps(good[1]),
                b"",
                orjson.dumps({**good[2], "type": "memo"}),
                orjson.dumps(good[2]),
            ]
        )
        + b"\n"
    )
    try:
        assert main(["import", str(f), "--dry-run"]) == 1
        assert "would publish 3 events" in capsys.readouterr().out
        assert rds.zcard(keys.recent(tenant)) == 0
        assert main(["import", str(f)]) == 1
    finally:
        get_settings.cache_clear()
    captured = capsys.readouterr()
    assert "published 3 events" in captured.out and "2 invalid lines" in captured.out
    assert f"{f}:2: invalid event" in captured.err and f"{f}:5: invalid event: type" in captured.err
    wait_until(lambda: rds.zcard(keys.recent(tenant)) == 3)
    assert stored(rds, tenant, derive_memory_id(tenant, "imp1")) is not None
    assert main(["import", str(tmp_path / "missing.jsonl")]) == 2


def test_import_resumes_from_its_checkpoint_and_counts_duplicates(
    worker: Proc,
    stack: Stack,
    rds: redis.Redis,
    tenant: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from app.importer import file_head
    from app.progress import write_checkpoint
    from app.settings import get_settings

    for k, v in stack.env.items():
        monkeypatch.setenv(k, v)
    lines = [
        orjson.dumps(
            {
                "schema_version": 1,
                "event_id": f"res{i}",
                "tenant_id": tenant,
                "type": "event",
                "content": {"text": f"resumed {i}"},
                "occurred_at": "2026-05-01T00:00:00Z",
            }
        )
        for i in range(4)
    ]
    f = tmp_path / "resume.jsonl"
    f.write_bytes(b"\n".join([*lines, lines[3]]) + b"\n")
    cp = tmp_path / "resume.jsonl.checkpoint"
    counts = {"accepted": 2, "rejected": 0, "duplicates": 0, "rejected_lines": []}
    offset = len(lines[0]) + len(lines[1]) + 2  # lines 1 and 2 were acknowledged before a kill
    write_checkpoint(cp, {"file": str(f), "head": file_head(f), "offset": offset, "line": 3, "counts": counts})
    get_settings.cache_clear()
    try:
        assert main(["import", str(f)]) == 0
        captured = capsys.readouterr()
        assert f"resuming {f} at line 3" in captured.err
        assert "published 4 events" in captured.out and "1 duplicates" in captured.out
        assert not cp.exists()
        wait_until(lambda: rds.zcard(keys.recent(tenant)) == 2)  # only lines 3 and 4 were published
        assert main(["import", str(f)]) == 0  # again, from the start: lines 3 to 5 are duplicates
        out = capsys.readouterr().out
        assert "published 2 events" in out and "3 duplicates" in out
        wait_until(lambda: rds.zcard(keys.recent(tenant)) == 4)
        cp.write_bytes(b'{"head": "another file", "offset": 1, "line": 2}')
        assert main(["import", str(f)]) == 2
        assert "belongs to another file" in capsys.readouterr().err
    finally:
        get_settings.cache_clear()

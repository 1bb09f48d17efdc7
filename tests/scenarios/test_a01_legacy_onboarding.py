"""A1 Legacy Onboarding: a JSON Lines export is imported with `memstream import`; killed with
kill -9 half-way, the same command resumes from its checkpoint and nothing is duplicated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson

from app.models import derive_memory_id
from tests.support.scenarios import Agent, Seeded, ago, cli, warehouse_count
from tests.support.stack import ROOT, wait_until

LINES = 4000


async def test_import_resumes_after_kill_and_reports_every_line(seeded: Seeded, agent: Agent, tmp_path: Path) -> None:
    session = seeded.scope("legacy")
    rows: list[bytes] = []
    for i in range(LINES):
        kind = ("event", "decision", "rule", "task")[i % 4]
        body = seeded.event(
            event_id=f"{session}-{i}",
            type=kind,
            session_id=session,
            agent_id="legacy-bot",
            content={"text": f"legacy export {i} of {session}", **({"status": "open"} if kind == "task" else {})},
            occurred_at=ago(hours=20, minutes=-i / 10),
        )
        if kind != "event":
            body["key"] = f"{session}-k{i}"
        rows.append(orjson.dumps(body))
    rows[99] = b'{"schema_version": 1, "event_id": "broken'  # line 100
    rows[2499] = orjson.dumps({**orjson.loads(rows[2499]), "type": "memo"})  # line 2500
    rows[2999] = rows[9]  # line 3000 repeats line 10's event id
    export = tmp_path / "legacy.jsonl"
    export.write_bytes(b"\n".join(rows) + b"\n")
    checkpoint = export.with_name("legacy.jsonl.checkpoint")

    env = {**os.environ, **seeded.stack.env}
    first = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "import", str(export), "--chunk-lines", "100"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(checkpoint.exists, timeout_s=120)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    stopped_at = orjson.loads(checkpoint.read_bytes())
    assert 0 < stopped_at["offset"] < export.stat().st_size, "killed in the middle of the file"

    second = cli(seeded.stack, "import", str(export), "--chunk-lines", "100")
    assert second.returncode == 1, second.stderr  # 1: some lines were rejected
    assert f"resuming {export} at line {stopped_at['line']}" in second.stderr
    assert "import legacy.jsonl: " in second.stderr and " B (100.0%)" in second.stderr  # progress in logs
    summary = second.stdout
    assert "2 invalid lines (rejected: lines 100, 2500)" in summary, summary
    accepted = int(summary.split("(accepted ")[1].split(")")[0])
    duplicates = int(summary.rsplit("; ", 1)[1].split(" duplicates")[0])
    assert accepted + duplicates == LINES - 2 and duplicates >= 1, summary
    assert not checkpoint.exists()

    unique = LINES - 3  # two rejected lines, one repeated event id
    wait_until(
        lambda: warehouse_count(seeded.settings, seeded.tenant, "AND session_id = %s", [session]) == unique,
        timeout_s=180,
        interval_s=1.0,
    )
    got = await agent.ok("/api/v2/memory/retrieve", memory_id=derive_memory_id(seeded.tenant, f"{session}-1234"))
    assert got["source"] == "hotset" and got["record"]["content"]["text"] == f"legacy export 1234 of {session}"
    found = await agent.ok("/api/v2/memory/search", q="legacy export", session_id=session, limit=100)
    assert len(found["results"]) == 100 and all(h["source"] == "hotset" for h in found["results"])

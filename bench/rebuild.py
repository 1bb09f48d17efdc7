"""Cold-cache rebuild benchmark: `memstream rebuild` against the raw path, in the same run.

One Redis and one file-backed warehouse emulator, filled once with N memories of one tenant
(mixed types, sessions and agents, all within their hotset TTL) through the sink's own stage +
MERGE. Then, each on an empty Redis (FLUSHDB before each):
  baseline  the raw path: one warehouse SELECT of every row (fetchall), then pipelined Redis
            writes of what a rebuild restores at the least: each memory's value (SET with TTL)
            and its recency indexes (all, type, session, agent) and keyword postings (ZADD),
            1,000 memories per pipeline, no version checks
  memstream app.rebuild.rebuild: keyset pages of the warehouse, the versioned hotset script
            (version guard, active pointers, every index), constant memory

Reported: seconds and memories/s of each path, ratio = baseline seconds / memstream seconds
(target >= 0.7) and whether memstream took <= 20 s. The restored indexes are checked equal.

Usage: python bench/rebuild.py [--quick] [--rows N]
(last line: one JSON object)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app import devstack, migrate  # noqa: E402
from app.pipeline import Incoming, prepare, validate  # noqa: E402
from app.rebuild import rebuild  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.snowflake_conn import connect  # noqa: E402
from app.text import index_terms  # noqa: E402
from sinks.hotset import keys, layout  # noqa: E402
from sinks.warehouse import SELECT_RECORDS, STAGE, MemoryRecordsTable, row_to_record  # noqa: E402

TENANT = "bench-rebuild"
TYPES = ("event", "decision", "rule", "identity", "task", "summary")
WORDS = ("billing", "latency", "onboarding", "invoice", "pricing", "privacy", "retention", "caching")


def events(n: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    out = []
    for i in range(n):
        t = TYPES[i % len(TYPES)]
        body: dict[str, Any] = {
            "schema_version": 1,
            "event_id": f"rb-{i}",
            "tenant_id": TENANT,
            "type": t,
            "session_id": f"s{i % 500}",
            "agent_id": f"a{i % 50}",
            "content": {"text": f"{t} {i} about {WORDS[i % len(WORDS)]} for team {i % 97} of the roadmap"},
            "occurred_at": (now - timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
        }
        if t in ("decision", "rule", "identity", "task"):
            body["key"] = f"k{i}"
        if t == "task":
            body["content"]["status"] = "open"
        if t == "summary":
            body["citations"] = [f"m-{i}"]
        out.append(body)
    return out


def fill_warehouse(settings: Settings, n: int, tmp: Path, batch: int = 10_000) -> None:
    """N records into MEMORY_RECORDS through the sink's stage + MERGE."""
    table = MemoryRecordsTable()
    conn = connect(settings)
    cur = conn.cursor()
    cur.execute(f"CREATE TEMPORARY STAGE IF NOT EXISTS {STAGE}")
    cur.execute("CREATE TEMPORARY TABLE IF NOT EXISTS BENCH_STAGE (v VARIANT)")
    sql = table.merge_sql(f"{settings.snowflake_schema}.MEMORY_RECORDS", "BENCH_STAGE")
    lines = []
    for i, e in enumerate(events(n)):
        msg = Incoming(orjson.dumps(e), "memory.events", i % 4, i)
        ev = validate(msg)
        rec = prepare(ev, msg.position).record  # type: ignore[arg-type]
        lines.append(orjson.dumps(table.to_row(rec.to_json())[0]))
    options = "AUTO_COMPRESS = FALSE SOURCE_COMPRESSION = NONE OVERWRITE = TRUE"
    for start in range(0, len(lines), batch):
        path = tmp / f"fill-{start}.json"
        path.write_bytes(b"\n".join(lines[start : start + batch]))
        cur.execute("TRUNCATE TABLE BENCH_STAGE")
        cur.execute(f"PUT 'file://{path}' @{STAGE} {options}")
        cur.execute(f"COPY INTO BENCH_STAGE FROM @{STAGE}/{path.name} FILE_FORMAT = (TYPE = JSON) PURGE = TRUE")
        cur.execute(sql).fetchall()
        path.unlink()
    conn.close()


def raw_path(settings: Settings, rds: redis.Redis, ttl_s: int) -> int:
    conn = connect(settings)
    cur = conn.cursor()
    cur.execute(f"SELECT {SELECT_RECORDS} FROM {MemoryRecordsTable.name} WHERE tenant_id = %s", [TENANT])
    names = [d.name.lower() for d in cur.description or ()]
    rows = cur.fetchall()
    conn.close()
    pipe = rds.pipeline(transaction=False)
    for n, row in enumerate(rows, start=1):
        rec = row_to_record(dict(zip(names, row, strict=True)), settings.topic_events)
        score = int(rec.occurred_at.timestamp() * 1000)
        t = rec.tenant_id
        pipe.set(keys.memory(t, rec.memory_id), layout.encode(rec.version, rec.to_json().decode()), ex=ttl_s)
        for ix in (
            keys.recent(t),
            keys.by_type(t, rec.type.value if rec.type else ""),
            keys.by_session(t, rec.session_id or ""),
            keys.by_agent(t, rec.agent_id or ""),
        ):
            pipe.zadd(ix, {rec.memory_id: score})
        for term in index_terms(f"{rec.key or ''} {(rec.content or {}).get('text', '')}"):
            pipe.zadd(keys.term(t, term), {rec.memory_id: score})
        if n % 1000 == 0:
            pipe.execute()
    pipe.execute()
    return len(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20,000 memories, under 60 s")
    ap.add_argument("--rows", type=int, default=None, help="memories (default 100,000)")
    args = ap.parse_args()
    n = args.rows or (20_000 if args.quick else 100_000)
    tmp = Path(tempfile.mkdtemp(prefix="bench-rebuild-"))
    red = devstack.redis_service(devstack.free_port(), tmp).start()
    wh = devstack.warehouse_service(devstack.free_port(), tmp / "warehouse", tmp).start(60)
    try:
        env = {
            "redis_url": f"redis://127.0.0.1:{red.port}/0",
            "snowflake_host": "127.0.0.1",
            "snowflake_port": str(wh.port),
            "snowflake_protocol": "http",
            "log_level": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        }
        settings = Settings(_env_file=None, **env)  # type: ignore[arg-type]
        migrate.run(settings)
        started = time.perf_counter()
        fill_warehouse(settings, n, tmp)
        print(f"warehouse filled with {n} memories in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        rds = redis.Redis(port=red.port, decode_responses=True)

        rds.flushdb()
        started = time.perf_counter()
        raw_rows = raw_path(settings, rds, 86400)
        raw_s = time.perf_counter() - started
        raw_sizes = (rds.zcard(keys.recent(TENANT)), rds.zcard(keys.term(TENANT, "roadmap")))

        rds.flushdb()
        started = time.perf_counter()
        counts = asyncio.run(rebuild(settings, checkpoint=None, progress=False))
        ms_s = time.perf_counter() - started
        ms_sizes = (rds.zcard(keys.recent(TENANT)), rds.zcard(keys.term(TENANT, "roadmap")))
        assert counts["restored"] == n == raw_rows and ms_sizes == raw_sizes == (n, n), (counts, ms_sizes, raw_sizes)
        ratio = raw_s / ms_s
        print(f"baseline  (SELECT + pipelined writes): {raw_s:6.2f} s  {n / raw_s:9.0f} memories/s")
        print(f"memstream (app.rebuild):               {ms_s:6.2f} s  {n / ms_s:9.0f} memories/s")
        print(f"ratio {ratio:.2f} (target >= 0.7); memstream within 20 s: {ms_s <= 20}")
        print(
            json.dumps(
                {
                    "bench": "rebuild",
                    "memories": n,
                    "baseline_s": round(raw_s, 3),
                    "memstream_s": round(ms_s, 3),
                    "memories_per_s": round(n / ms_s),
                    "baseline_memories_per_s": round(n / raw_s),
                    "ratio": round(ratio, 3),
                    "within_20s": ms_s <= 20,
                }
            )
        )
    finally:
        wh.stop()
        red.stop()


if __name__ == "__main__":
    main()

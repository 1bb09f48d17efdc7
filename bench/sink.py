"""Warehouse sink benchmark: rows/s from `memory.records` into MEMORY_RECORDS, next to the raw path.

In one run, on a fresh broker, same records, same batch size, each path on its own fresh
file-backed warehouse emulator process (the emulator slows as it holds more data) and empty
database:
  baseline  the raw connector bulk path with no Kafka: staging lines prepared in memory, then per
            batch PUT + COPY into a temporary VARIANT table + the sink's MERGE
  memstream the real worker (`memstream worker --agents warehouse`: the warehouse handler on the
            batch-consumer loop, agents/loop.py) draining a backlog on `memory.records`: consume,
            parse and validate (while the previous batch is written), stage, MERGE, dead-letter
            nothing, commit offsets
  lag       the worker at a fixed offered rate: publish -> the MERGE that made the record visible

Throughput of both paths is measured the same way, from the warehouse's own clock: every MERGE
stamps its rows' loaded_at, so rows/s = rows after the first batch / (last stamp - first stamp).
That is the sustained rate, with neither path's start-up (connect, process start, group join) in
it. The worker's backlog is published before it starts, so the producer does not share the 2
cores with it. (The worker's wall time from process start is printed too, for reference.)

Usage: python bench/sink.py [--quick] [--rows N] [--batch-size B] [--rate R]
(last line: one JSON object: rows_per_s, baseline_rows_per_s, ratio, batch_size, lag percentiles)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app import devstack, migrate  # noqa: E402
from app.kafka import caught_up, ensure_topics, publish_sync  # noqa: E402
from app.pipeline import Incoming, prepare, validate  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.snowflake_conn import connect  # noqa: E402
from app.workload import conversation_events  # noqa: E402
from sinks.warehouse import STAGE, MemoryRecordsTable  # noqa: E402


def records(n: int, tenants: list[str], tag: str) -> list[tuple[bytes, bytes]]:
    """`n` canonical records (key, value) as the ingest agent publishes them."""
    out = []
    for i, e in enumerate(conversation_events(tenants, n, tag=tag)):
        msg = Incoming(orjson.dumps(e), "memory.events", i % 4, i)
        ev = validate(msg)
        assert not hasattr(ev, "reason"), ev
        rec = prepare(ev, msg.position).record  # type: ignore[arg-type]
        out.append((f"{rec.tenant_id}/{rec.memory_id}".encode(), rec.to_json()))
    return out


def wait(predicate: Any, timeout_s: float, what: str, interval_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(interval_s)


class Env:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.kafka = devstack.kafka_service(devstack.free_port(), tmp, cluster_id="bench-sink").start()
        self.redis = devstack.redis_service(devstack.free_port(), tmp).start()
        self.warehouse = self._start_warehouse("warehouse")
        self.env = {
            "MEMSTREAM_KAFKA_BOOTSTRAP": f"127.0.0.1:{self.kafka.port}",
            "MEMSTREAM_REDIS_URL": f"redis://127.0.0.1:{self.redis.port}/0",
            "MEMSTREAM_SNOWFLAKE_HOST": "127.0.0.1",
            "MEMSTREAM_SNOWFLAKE_PORT": str(self.warehouse.port),
            "MEMSTREAM_SNOWFLAKE_PROTOCOL": "http",
            "MEMSTREAM_SNOWFLAKE_DATABASE": "BENCH_WORKER",
            "MEMSTREAM_TOPIC_PREFIX": "bench.",
            "MEMSTREAM_WORKER_GROUP": "bench-worker",
            "MEMSTREAM_WAREHOUSE_GROUP": "bench-warehouse",
            "MEMSTREAM_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        }

    def _start_warehouse(self, name: str) -> devstack.Service:
        return devstack.warehouse_service(devstack.free_port(), self.tmp / name, self.tmp).start(60)

    def fresh_warehouse(self) -> None:
        """A new emulator process for the next path: the emulator slows as it holds more data,
        so the path measured second would otherwise pay for the first one's rows."""
        self.warehouse.stop()
        self.warehouse = self._start_warehouse("warehouse-2")
        self.env["MEMSTREAM_SNOWFLAKE_PORT"] = str(self.warehouse.port)

    def settings(self, **over: Any) -> Settings:
        """Settings of the worker's environment (plus overrides)."""
        values: dict[str, Any] = {k.removeprefix("MEMSTREAM_").lower(): v for k, v in self.env.items()}
        values.update(over)
        return Settings(_env_file=None, **values)

    def start_worker(self, batch: int) -> subprocess.Popen[bytes]:
        # This tree's memstream, not whichever the venv installed: the worker runs outside it (cwd).
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, **self.env, "MEMSTREAM_SINK_BATCH_MAX_ROWS": str(batch), "PYTHONPATH": path}
        log = open(self.tmp / "worker.log", "ab")  # noqa: SIM115 - the child keeps it
        return subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker", "--agents", "warehouse"],
            env=env,
            cwd=self.tmp,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        for svc in (self.warehouse, self.redis, self.kafka):
            svc.stop()


def _in(tenants: list[str]) -> str:
    return "tenant_id IN (" + ", ".join(["%s"] * len(tenants)) + ")"


def count_rows(cur: Any, tenants: list[str]) -> int:
    return int(cur.execute(f"SELECT COUNT(*) FROM MEMORY_RECORDS WHERE {_in(tenants)}", tenants).fetchone()[0])


def sustained_rate(cur: Any, tenants: list[str]) -> tuple[float, int]:
    """(rows/s, batches) from the MERGE stamps: rows after the first batch / first-to-last stamp."""
    stamps = cur.execute(
        f"SELECT loaded_at, COUNT(*) FROM MEMORY_RECORDS WHERE {_in(tenants)} GROUP BY 1 ORDER BY 1", tenants
    ).fetchall()
    assert len(stamps) >= 2, f"need at least two batches to measure a rate, got {len(stamps)}"
    span = (stamps[-1][0] - stamps[0][0]).total_seconds()
    return sum(int(c) for _, c in stamps[1:]) / span, len(stamps)


class Baseline:
    """Stage + MERGE straight from memory: the most the warehouse path can do at this batch size."""

    def __init__(self, settings: Settings, batch: int) -> None:
        self.table = MemoryRecordsTable()
        self.batch = batch
        self.sql = self.table.merge_sql(f"{settings.snowflake_schema}.MEMORY_RECORDS", "BENCH_STAGE")
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-sink-raw-"))
        self.conn = connect(settings)
        self.cur = self.conn.cursor()
        self.cur.execute(f"CREATE TEMPORARY STAGE IF NOT EXISTS {STAGE}")
        self.cur.execute("CREATE TEMPORARY TABLE IF NOT EXISTS BENCH_STAGE (v VARIANT)")

    def run(self, msgs: list[tuple[bytes, bytes]]) -> None:
        lines = [orjson.dumps(self.table.to_row(v)[0]) for _, v in msgs]  # prepared: not timed
        options = "AUTO_COMPRESS = FALSE SOURCE_COMPRESSION = NONE OVERWRITE = TRUE"
        for start in range(0, len(lines), self.batch):
            path = self.tmp / f"raw-{start}-{time.monotonic_ns()}.json"
            path.write_bytes(b"\n".join(lines[start : start + self.batch]))
            self.cur.execute("TRUNCATE TABLE BENCH_STAGE")
            self.cur.execute(f"PUT 'file://{path}' @{STAGE} {options}")
            self.cur.execute(
                f"COPY INTO BENCH_STAGE FROM @{STAGE}/{path.name} FILE_FORMAT = (TYPE = JSON) PURGE = TRUE"
            )
            self.cur.execute(self.sql).fetchall()
            path.unlink()

    def close(self) -> None:
        self.conn.close()


def produce(bootstrap: str, topic: str, msgs: list[tuple[bytes, bytes]]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for key, value in msgs:
        while True:
            try:
                p.produce(topic, value=value, key=key)
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(60) == 0


def bench_lag(settings: Settings, cur: Any, rate: int, seconds: float) -> list[float]:
    """Publish at `rate`/s; lag of a record = its loaded_at (stamped by the MERGE that wrote it,
    UTC) minus the time it was published. Nothing is polled while it runs."""
    tenant = "lag"
    msgs = records(int(rate * seconds), [tenant], "lag")
    sent: dict[str, float] = {}
    ends: dict[int, int] = {}

    def delivered(err: Any, msg: Any) -> None:
        if err is None:
            ends[msg.partition()] = max(ends.get(msg.partition(), 0), msg.offset() + 1)

    p = Producer({"bootstrap.servers": settings.kafka_bootstrap, "acks": "all", "linger.ms": 0})
    t0 = time.perf_counter()
    for i, (key, value) in enumerate(msgs):
        due = t0 + i / rate
        while (now := time.perf_counter()) < due:
            time.sleep(min(0.001, due - now))  # pacing the offered load
        sent[key.decode().split("/", 1)[1]] = time.time()
        p.produce(settings.topic_records, value, key=key, on_delivery=delivered)
        p.poll(0)
    assert p.flush(30) == 0
    wait(lambda: caught_up(settings, settings.warehouse_group, settings.topic_records, ends), 120, "lag run unfinished")
    rows = cur.execute("SELECT id, loaded_at FROM MEMORY_RECORDS WHERE tenant_id = %s", (tenant,)).fetchall()
    return [max(0.0, _epoch(loaded) - sent[mid]) * 1000 for mid, loaded in rows]


def _epoch(ntz: datetime) -> float:
    return ntz.replace(tzinfo=UTC).timestamp()


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main() -> None:
    # `timeout` and Ctrl-C: stop the services this run started (they run in their own sessions).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller run, under 60 s")
    ap.add_argument("--rows", type=int, default=None, help="rows per path")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the sink_batch_max_rows setting")
    ap.add_argument("--rate", type=int, default=2000, help="offered rate of the lag run (rows/s)")
    a = ap.parse_args()
    n = a.rows or (40000 if a.quick else 150000)
    batch = a.batch_size or Settings(_env_file=None).sink_batch_max_rows
    seconds = 5.0 if a.quick else 20.0
    env = Env(Path(tempfile.mkdtemp(prefix="bench-sink-")))
    proc = None
    try:
        # Each path has its own database: the emulator's MERGE joins the whole target table, so
        # its cost grows with the table, and both tables grow alike this way.
        raw_settings = env.settings(sink_batch_max_rows=batch, snowflake_database="BENCH_RAW")
        migrate.run(raw_settings)
        print(f"{n} rows per path, batch size {batch}; lag run {a.rate}/s for {seconds:.0f}s", flush=True)

        base_tenants = [f"base{i}" for i in range(8)]
        baseline = Baseline(raw_settings, batch)
        baseline.run(records(n, base_tenants, "b"))
        base, base_batches = sustained_rate(baseline.cur, base_tenants)
        baseline.close()
        print(f"baseline: raw stage + MERGE, no Kafka:     {base:,.0f} rows/s ({base_batches} MERGEs)", flush=True)

        env.fresh_warehouse()
        settings = env.settings(sink_batch_max_rows=batch)
        ensure_topics(settings)
        migrate.run(settings)
        work_tenants = [f"work{i}" for i in range(8)]
        ends = publish_sync(settings, records(n, work_tenants, "w"), settings.topic_records)
        t0 = time.monotonic()
        proc = env.start_worker(batch)
        # Done when the agent has committed past the backlog: it commits only after the MERGE,
        # and watching Kafka keeps the measurement's queries off the warehouse.
        wait(lambda: caught_up(settings, settings.warehouse_group, settings.topic_records, ends), 600, "no drain")
        drained_s = time.monotonic() - t0
        conn = connect(settings)
        cur = conn.cursor()
        assert count_rows(cur, work_tenants) == n
        ms, batches = sustained_rate(cur, work_tenants)
        print(
            f"memstream worker: memory.records -> MERGE:  {ms:,.0f} rows/s ({batches} MERGEs; {ms / base:.2f}x) "
            f"[{drained_s:.1f}s from process start to the last commit, start-up included]",
            flush=True,
        )
        lags = bench_lag(settings, cur, a.rate, seconds)
        p50, p95, p99 = pct(lags, 0.5), pct(lags, 0.95), pct(lags, 0.99)
        print(
            f"end-to-end lag (publish -> MERGE) at {a.rate}/s over {len(lags)} rows: p50 {p50:.0f} ms, "
            f"p95 {p95:.0f} ms, p99 {p99:.0f} ms (batch window {settings.sink_batch_within_s:.1f}s)",
            flush=True,
        )
        conn.close()
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        env.stop()
    summary = {
        "rows": n,
        "batch_size": batch,
        "rows_per_s": round(ms),
        "baseline_rows_per_s": round(base),
        "ratio": round(ms / base, 2),
        "offered_rate": a.rate,
        "lag_p50_ms": round(p50),
        "lag_p95_ms": round(p95),
        "lag_p99_ms": round(p99),
        "batch_within_s": settings.sink_batch_within_s,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

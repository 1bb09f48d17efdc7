"""Search by meaning: embedding throughput on one core next to the ingest agent's stateless
stages, exact vector search latency at tenant scale, and vector freshness under load.

    python bench/embed.py [--quick] [--memories N] [--rate R] [--seconds S] [--no-freshness] [--minilm]

1. Throughput (in process, one thread, so one core): the embedding agent's `prepare` (parse,
   embed with the default model, encode the hotset value and the `memory.vectors` message)
   against the ingest agent's `prepare` (validate, redact, privacy, dedupe digest, terms) over
   the same records of real chat messages (chitchat-dataset), measured in turns in the same run.
2. Vector search (in process): `TenantVectors.top` over `--memories` vectors, unfiltered and
   with a session filter, plus the query embedding: what a gateway adds to a search.
3. Freshness (real stack: app.devstack Redis, Tansu, warehouse emulator and `memstream worker`
   with all its agents): events published at `--rate`/s for `--seconds`; for a sample, the time
   from the memory's key appearing in Redis (visible to keyword search) to its vector's key
   appearing (target: p99 <= 2 s), next to the baseline measured on the same events: publish to
   visible to keyword search. Then how long until MEMORY_VECTORS in the warehouse holds every
   vector of the run (the embedding agent publishes them on `memory.vectors`, the warehouse agent
   MERGEs them).
The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.embed import EmbedHandler  # noqa: E402
from agents.ingest import IngestProcessor  # noqa: E402
from agents.loop import Item  # noqa: E402
from app import devstack  # noqa: E402
from app.embed import Embedder, MiniLMEmbedder, WordLlamaEmbedder  # noqa: E402
from app.gateway.vectors import TenantVectors  # noqa: E402
from app.settings import Settings  # noqa: E402


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def chat(n: int) -> list[str]:
    from app.workload import conversation_events

    return [e["content"]["text"] for e in conversation_events(["bench"], n, tag="embed")][:n]


def records(texts: list[str]) -> tuple[list[Item], list[Item]]:
    """The same memories as memory.events items (ingest) and memory.records items (embed)."""
    from app.models import MemoryEvent, SourcePosition
    from app.pipeline import prepare

    events, recs = [], []
    for i, t in enumerate(texts):
        e = {
            "schema_version": 1,
            "event_id": f"e{i}",
            "tenant_id": "bench",
            "type": "event",
            "session_id": f"s{i % 100}",
            "content": {"text": t},
            "occurred_at": "2026-11-01T10:00:00Z",
        }
        raw = orjson.dumps(e)
        events.append(Item(raw, "memory.events", 0, i, None))
        p = prepare(MemoryEvent.model_validate_json(raw), SourcePosition(topic="memory.events", partition=0, offset=i))
        recs.append(Item(p.record.to_json(), "memory.records", 0, i, None))
    return events, recs


def throughput(texts: list[str], model: Embedder | None = None) -> dict[str, float]:
    settings = Settings(_env_file=None)
    events, recs = records(texts)
    model = model or WordLlamaEmbedder(settings.embed_dim)

    class NoHotset:
        def ttl_for(self, *_: Any) -> int:
            return 86400

    # A producer is only used by `write`: with one, `prepare` builds the memory.vectors messages too.
    embed = EmbedHandler(settings, model, None, NoHotset(), producer=object())  # type: ignore[arg-type]
    ingest = IngestProcessor(settings, None, None)  # type: ignore[arg-type]
    out: dict[str, float] = {}
    for name, fn, items in (("ingest_prepare", ingest.prepare, events), ("embed_prepare", embed.prepare, recs)):
        fn(items[:500])  # warm-up
        t = time.perf_counter()
        for start in range(0, len(items), 1000):
            fn(items[start : start + 1000])
        out[f"{name}_per_s"] = round(len(items) / (time.perf_counter() - t))
    # Measured in turns above; again in the other order, so that a burst of load elsewhere on the
    # machine does not favour one of them: the better of the two runs of each counts.
    for name, fn, items in (("embed_prepare", embed.prepare, recs), ("ingest_prepare", ingest.prepare, events)):
        t = time.perf_counter()
        for start in range(0, len(items), 1000):
            fn(items[start : start + 1000])
        out[f"{name}_per_s"] = max(out[f"{name}_per_s"], round(len(items) / (time.perf_counter() - t)))
    return out


def vector_search(n: int, model: WordLlamaEmbedder, texts: list[str]) -> dict[str, float]:
    from agents.embed import plan

    base = [{"tenant_id": "b", "memory_id": f"m{i}", "version": f"{i:032d}", "type": "event",
             "session_id": f"s{i % 500}", "visibility": "public", "occurred_at": "2026-11-01T10:00:00Z",
             "content": {"text": texts[i % len(texts)]}} for i in range(n)]  # fmt: skip
    tv = TenantVectors(model.name, model.dim)
    for op in plan(base, model, lambda r: 86400):
        assert op.value is not None
        tv.upsert(op.memory_id, op.value)
    queries = texts[:200]
    lat: dict[str, list[float]] = {"embed_query": [], "top_all": [], "top_session": [], "top_public": []}
    for q in queries:
        t = time.perf_counter()
        v = model.embed([q])[0]
        lat["embed_query"].append(time.perf_counter() - t)
        for name, kw in (("top_all", {}), ("top_session", {"session_id": "s7"}),
                         ("top_public", {"channel_visibility": "public"})):  # fmt: skip
            t = time.perf_counter()
            tv.top(v, 100, **kw)  # type: ignore[arg-type]
            lat[name].append(time.perf_counter() - t)
    out: dict[str, float] = {"vectors": tv.rows, "matrix_mb": round(tv.nbytes / 2**20, 1)}
    for name, xs in lat.items():
        out[f"{name}_p50_ms"] = round(statistics.median(xs) * 1000, 3)
        out[f"{name}_p95_ms"] = round(pct(xs, 0.95) * 1000, 3)
    return out


def freshness(rate: float, seconds: float, texts: list[str]) -> dict[str, float]:
    global _producer
    import redis as redis_sync

    from app.kafka import ensure_topics
    from app.migrate import run as migrate
    from sinks.hotset import keys
    from tests.support.kafka import publish

    tmp = Path(tempfile.mkdtemp(prefix="memstream-bench-embed-"))
    services = [
        devstack.redis_service(devstack.free_port(), tmp),
        devstack.kafka_service(devstack.free_port(), tmp, cluster_id="bench-embed"),
        devstack.warehouse_service(devstack.free_port(), None, tmp),
    ]
    worker: subprocess.Popen[bytes] | None = None
    try:
        for svc in services:
            svc.start(deadline_s=60)
        red, kafka, wh = services
        env = {
            "MEMSTREAM_ENV": "development",
            "MEMSTREAM_REDIS_URL": f"redis://127.0.0.1:{red.port}/0",
            "MEMSTREAM_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka.port}",
            "MEMSTREAM_SNOWFLAKE_HOST": "127.0.0.1",
            "MEMSTREAM_SNOWFLAKE_PORT": str(wh.port),
            "MEMSTREAM_SNOWFLAKE_PROTOCOL": "http",
            "MEMSTREAM_LOG_LEVEL": "WARNING",
        }
        settings = Settings(_env_file=None, **{k.removeprefix("MEMSTREAM_").lower(): v for k, v in env.items()})
        ensure_topics(settings)
        migrate(settings)
        log = open(tmp / "worker.log", "ab")  # noqa: SIM115
        worker = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], env={**os.environ, **env},
                                  cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        r = redis_sync.Redis(port=red.port)
        tenant = f"f-{uuid.uuid4().hex[:6]}"
        # Warm-up: the worker's groups join; wait until a first vector appears.
        publish(settings, [ev(tenant, "warm", "warm up")])
        deadline = time.monotonic() + 120
        while not r.zcard(keys.vector_index(tenant)) and time.monotonic() < deadline:
            time.sleep(0.1)
        sample: dict[str, float] = {}
        mem_seen: dict[str, float] = {}
        vec_seen: dict[str, float] = {}
        from app.models import derive_memory_id

        n = int(rate * seconds)
        start = time.monotonic()
        for i in range(n):
            due = start + i / rate
            while time.monotonic() < due:
                poll(r, tenant, sample, mem_seen, vec_seen, keys)
            eid = f"e{i}"
            publish_async(settings, ev(tenant, eid, f"{texts[i % len(texts)]} ({i})"))
            if i % 50 == 0:  # a sample of the events is watched
                sample[derive_memory_id(tenant, eid)] = time.monotonic()
        if _producer is not None:
            _producer.flush(30)
        published_at = time.monotonic()
        deadline = time.monotonic() + 60
        while len(vec_seen) < len(sample) and time.monotonic() < deadline:
            poll(r, tenant, sample, mem_seen, vec_seen, keys)
        gaps = [max(0.0, vec_seen[m] - mem_seen[m]) for m in sample if m in vec_seen and m in mem_seen]
        keyword = [max(0.0, mem_seen[m] - sample[m]) for m in sample if m in mem_seen]
        # The warehouse copy: every vector of the run (and the warm-up's) in MEMORY_VECTORS.
        warehouse_s = warehouse_catch_up(settings, tenant, n + 1, published_at, 60.0)
        return {
            "rate": rate,
            "events": n,
            "sampled": len(sample),
            "vectors_seen": len(vec_seen),
            "freshness_p50_s": round(statistics.median(gaps), 3) if gaps else -1.0,
            "freshness_p99_s": round(pct(gaps, 0.99), 3) if gaps else -1.0,
            "freshness_max_s": round(max(gaps), 3) if gaps else -1.0,
            "freshness_target_p99_s": 2.0,
            "baseline_keyword_visible_p50_s": round(statistics.median(keyword), 3) if keyword else -1.0,
            "baseline_keyword_visible_p99_s": round(pct(keyword, 0.99), 3) if keyword else -1.0,
            "warehouse_vectors_after_last_publish_s": warehouse_s,
        }
    finally:
        _producer = None  # closed before its broker stops (else librdkafka logs the disconnect)
        if worker is not None and worker.poll() is None:
            worker.terminate()
            worker.wait(30)
        for svc in reversed(services):
            svc.stop()


def warehouse_catch_up(settings: Settings, tenant: str, expected: int, since: float, timeout_s: float) -> float:
    """Seconds from `since` until MEMORY_VECTORS holds `expected` vectors of the tenant (-1: not
    within the timeout)."""
    from app.snowflake_conn import connect

    conn = connect(settings)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            cur = conn.cursor()
            cur.execute("SELECT COUNT(*) FROM MEMORY_VECTORS WHERE tenant_id = %s AND vector IS NOT NULL", (tenant,))
            row = cur.fetchone()
            if row is not None and int(row[0]) >= expected:  # type: ignore[call-overload]
                return round(time.monotonic() - since, 2)
            time.sleep(0.25)
        return -1.0
    finally:
        conn.close()


_producer: Any = None


def publish_async(settings: Settings, e: dict[str, Any]) -> None:
    global _producer
    from confluent_kafka import Producer

    if _producer is None:
        _producer = Producer({**settings.kafka_client_config(), "linger.ms": 5})
    _producer.produce(settings.topic_events, orjson.dumps(e), key=e["tenant_id"].encode())
    _producer.poll(0)


def poll(
    r: Any, tenant: str, sample: dict[str, float], mem: dict[str, float], vec: dict[str, float], keys: Any
) -> None:
    pending = [m for m in sample if m not in vec]
    if not pending:
        time.sleep(0.002)
        return
    pipe = r.pipeline(transaction=False)
    for m in pending:
        pipe.exists(keys.memory(tenant, m))
        pipe.exists(keys.vector(tenant, m))
    res = pipe.execute()
    now = time.monotonic()
    for m, has_mem, has_vec in zip(pending, res[::2], res[1::2], strict=True):
        if has_mem and m not in mem:
            mem[m] = now
        if has_vec and m not in vec:
            vec[m] = now
            mem.setdefault(m, now)
    time.sleep(0.005)


def ev(tenant: str, eid: str, text: str) -> dict[str, Any]:
    return {"schema_version": 1, "event_id": eid, "tenant_id": tenant, "type": "event", "session_id": "s",
            "content": {"text": text}, "occurred_at": datetime.now(UTC).isoformat()}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--memories", type=int, default=None, help="vectors in the search test (default 100000)")
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--seconds", type=float, default=None)
    p.add_argument("--no-freshness", action="store_true")
    p.add_argument("--minilm", action="store_true", help="also the optional MiniLM model's throughput")
    args = p.parse_args()
    n = args.memories or (10_000 if args.quick else 100_000)
    texts = chat(20_000 if not args.quick else 5_000)
    out: dict[str, Any] = {}
    out.update(throughput(texts))
    out["embed_vs_ingest"] = round(out["embed_prepare_per_s"] / out["ingest_prepare_per_s"], 2)
    print(json.dumps(out), file=sys.stderr)
    if args.minilm:  # the optional model, on fewer texts: it embeds ~100 a second per core
        mini = throughput(texts[: 300 if args.quick else 1000], MiniLMEmbedder())
        out["minilm_embed_prepare_per_s"] = mini["embed_prepare_per_s"]
        out["minilm_embed_vs_ingest"] = round(mini["embed_prepare_per_s"] / mini["ingest_prepare_per_s"], 4)
        print(json.dumps(out), file=sys.stderr)
    out.update(vector_search(n, WordLlamaEmbedder(64), texts))
    print(json.dumps(out), file=sys.stderr)
    if not args.no_freshness:
        out.update(freshness(args.rate, args.seconds or (5.0 if args.quick else 15.0), texts))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

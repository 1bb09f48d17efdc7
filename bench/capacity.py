"""Per-unit costs behind docs/capacity.md, measured as CPU time (not throughput), so that they
hold on a shared machine where wall-clock rates swing with other people's work.

    python bench/capacity.py [--quick] [--memories N] [--seconds S]

Starts its own redis-server, Tansu broker and warehouse emulator (app.devstack, free loopback
ports) and measures:
  write path   N real chat memories (chitchat-dataset; the same feed as bench/gateway.py) through
               the worker's own stages in-process: parse + validate, prepare (redaction, record,
               terms, digest), plan (dedupe, supersession), the versioned hotset Lua writes and the
               embedding agent's vectors. CPU per event of the Python stages (process time) and of
               redis-server (INFO cpu), in two halves, and Redis bytes per memory (INFO memory
               used_memory) after each half: the marginal cost at N/2 and at N memories.
  read path    `memstream gateway` (a subprocess) over those memories, loaded by closed-loop
               clients for S seconds per endpoint: retrieve by id, search (hotset only:
               fallback=false), context, and store (a write: validated and published to the
               broker, no wait). CPU per request of the gateway process (psutil) and of
               redis-server, and the requests/s it reached meanwhile (wall clock: machine-dependent).
Kafka's share is not measured here (a confluent produce or consume is a few µs of CPU per message:
measured with kcat on this kind of machine: 480k-1M msg/s on 2 cores) and the warehouse is the emulator, not
Snowflake: docs/capacity.md uses bench/sink.py only for the batch shape, not for Snowflake rates.

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app import devstack  # noqa: E402
from bench.gateway import SESSION, TENANT, events, frequent_terms  # noqa: E402

HEADER = "X-Memstream-Dev-Tenant"
CLIENTS = 8


def redis_cpu_s(r: Any) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def redis_used_bytes(r: Any) -> int:
    return int(r.info("memory")["used_memory"])


async def write_path(redis_url: str, evs: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """The worker's stages on `evs` in two halves; CPU split by stage, Redis CPU and bytes per half."""
    import orjson
    import redis as redis_sync
    import redis.asyncio as aioredis

    from agents.embed import plan as plan_vectors
    from app.embed import WordLlamaEmbedder
    from app.models import MemoryEvent, SourcePosition
    from app.pipeline import plan, prepare
    from app.settings import DEFAULT_TTLS
    from sinks.hotset import Hotset, VectorWriter

    r = aioredis.from_url(redis_url, decode_responses=True)
    rs = redis_sync.Redis.from_url(redis_url)
    model = WordLlamaEmbedder(64)  # the default model and width
    vectors = VectorWriter(r)
    ttl = 30 * 86400  # everything stays for the measurement
    hotset = Hotset(r, dict(DEFAULT_TTLS) | {"event": ttl}, ttl)
    ids: list[str] = []
    halves: list[dict[str, Any]] = []
    base_bytes = redis_used_bytes(rs)
    mid = len(evs) // 2
    for part in (evs[:mid], evs[mid:]):
        cpu = {"validate": 0.0, "prepare": 0.0, "plan": 0.0, "embed": 0.0, "total": 0.0}
        r_cpu0 = redis_cpu_s(rs)
        t_all = time.process_time()
        for start in range(0, len(part), 2000):
            chunk = part[start : start + 2000]
            raw = [orjson.dumps(e) for e in chunk]
            t = time.process_time()
            parsed = [MemoryEvent.model_validate_json(b) for b in raw]
            cpu["validate"] += time.process_time() - t
            t = time.process_time()
            pos = [SourcePosition(topic="memory.events", partition=0, offset=start + i) for i in range(len(chunk))]
            prepared = [prepare(e, p) for e, p in zip(parsed, pos, strict=True)]
            cpu["prepare"] += time.process_time() - t
            state = await hotset.read_state(prepared)
            t = time.process_time()
            intents = plan(prepared, state, 0)
            cpu["plan"] += time.process_time() - t
            await hotset.apply(intents)
            written = [orjson.loads(i.record_json) for i in intents if i.kind == "write"]
            t = time.process_time()
            ops = plan_vectors(written, model, lambda rec: ttl)
            cpu["embed"] += time.process_time() - t
            await vectors.apply(ops)
            ids.extend(i.record.memory_id for i in intents if i.kind == "write")
        cpu["total"] = time.process_time() - t_all
        halves.append(
            {
                "events": len(part),
                "memories_total": len(ids),
                "python_us_per_event": {k: round(v / len(part) * 1e6, 1) for k, v in cpu.items()},
                "redis_us_per_event": round((redis_cpu_s(rs) - r_cpu0) / len(part) * 1e6, 1),
                "redis_bytes_per_memory": round((redis_used_bytes(rs) - base_bytes) / len(ids)),
            }
        )
    keys = int(rs.dbsize())
    await r.aclose()
    rs.close()
    return {"halves": halves, "redis_keys": keys, "memories": len(ids)}, ids


async def read_path(port: int, gw_pid: int, redis_url: str, ids: list[str], queries: list[str], seconds: float) -> Any:
    import httpx
    import psutil
    import redis as redis_sync

    rs = redis_sync.Redis.from_url(redis_url)
    gw = psutil.Process(gw_pid)
    rng = random.Random(5)
    paths = {
        "retrieve": lambda: ("/api/v2/memory/retrieve", {"memory_id": rng.choice(ids)}),
        "search": lambda: ("/api/v2/memory/search", {"q": rng.choice(queries), "fallback": "false"}),
        "context": lambda: ("/api/v2/context", {"session_id": SESSION, "agent_id": "agent-1", "budget_tokens": 2000}),
    }
    texts = [q + " and then some more words about it" for q in queries]
    # A write at the gateway: validated and published to the broker (acks=all), no wait.
    paths["store"] = lambda: ("/api/v2/memory/store", {"text": rng.choice(texts)})

    async def send(c: httpx.AsyncClient, name: str, path: str, params: dict[str, Any]) -> httpx.Response:
        if name == "store":
            body = {"type": "event", "session_id": "cap-writes", "content": {"text": params["text"]}}
            return await c.post(path, json=body)
        return await c.get(path, params=params)

    out: dict[str, Any] = {}
    base = f"http://{devstack.LOOPBACK}:{port}"
    clients = [httpx.AsyncClient(base_url=base, headers={HEADER: TENANT}, timeout=30) for _ in range(CLIENTS)]
    try:
        for name, make in paths.items():
            for c in clients[:2]:  # warm: connections, caches, first-call imports
                path, params = make()
                (await send(c, name, path, params)).raise_for_status()
            counts = [0] * CLIENTS
            errors = 0
            end = time.monotonic() + seconds

            async def loop(
                i: int,
                c: httpx.AsyncClient,
                make: Any = make,
                end: float = end,
                counts: list[int] = counts,
                name: str = name,
            ) -> None:
                nonlocal errors
                while time.monotonic() < end:
                    path, params = make()
                    resp = await send(c, name, path, params)
                    counts[i] += 1
                    errors += resp.status_code not in (200, 202)

            g0, r0, w0 = sum(gw.cpu_times()[:2]), redis_cpu_s(rs), time.monotonic()
            await asyncio.gather(*(loop(i, c) for i, c in enumerate(clients)))
            g1, r1, w1 = sum(gw.cpu_times()[:2]), redis_cpu_s(rs), time.monotonic()
            n = sum(counts)
            out[name] = {
                "requests": n,
                "errors": errors,
                "gateway_cpu_ms_per_request": round((g1 - g0) / n * 1000, 3),
                "redis_cpu_us_per_request": round((r1 - r0) / n * 1e6, 1),
                "reached_rps": round(n / (w1 - w0), 1),
                "gateway_cpu_share": round((g1 - g0) / (w1 - w0), 2),
            }
    finally:
        for c in clients:
            await c.aclose()
        rs.close()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="6,000 memories, 3 s per endpoint (< 60 s)")
    p.add_argument("--memories", type=int)
    p.add_argument("--seconds", type=float)
    args = p.parse_args()
    n = args.memories or (6_000 if args.quick else 50_000)
    seconds = args.seconds or (3.0 if args.quick else 15.0)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="memstream-bench-cap-"))
    services = [
        devstack.redis_service(devstack.free_port(), tmp),
        devstack.kafka_service(devstack.free_port(), tmp, cluster_id="bench-capacity"),
        devstack.warehouse_service(devstack.free_port(), None, tmp),
    ]
    gateway: subprocess.Popen[bytes] | None = None
    try:
        for svc in services:
            svc.start(deadline_s=60)
        red, kafka, wh = services
        redis_url = f"redis://{devstack.LOOPBACK}:{red.port}/0"
        evs = events(n, 200)
        write, ids = asyncio.run(write_path(redis_url, evs))
        print(json.dumps(write["halves"]), file=sys.stderr)
        port = devstack.free_port()
        env = {
            **os.environ,
            "MEMSTREAM_ENV": "development",
            "MEMSTREAM_REDIS_URL": redis_url,
            "MEMSTREAM_KAFKA_BOOTSTRAP": f"{devstack.LOOPBACK}:{kafka.port}",
            "MEMSTREAM_SNOWFLAKE_HOST": devstack.LOOPBACK,
            "MEMSTREAM_SNOWFLAKE_PORT": str(wh.port),
            "MEMSTREAM_SNOWFLAKE_PROTOCOL": "http",
            "MEMSTREAM_GATEWAY_HOST": devstack.LOOPBACK,
            "MEMSTREAM_GATEWAY_PORT": str(port),
            "MEMSTREAM_DEV_TENANT_HEADER_ENABLED": "true",
            "MEMSTREAM_RATE_LIMIT_PER_TENANT_PER_MINUTE": "0",
            "MEMSTREAM_LOG_LEVEL": "WARNING",
        }
        log = open(tmp / "gateway.log", "ab")  # noqa: SIM115
        gateway = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "gateway"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
        devstack.wait_for_port(port, 60, gateway)
        rng = random.Random(11)
        terms = frequent_terms(evs, 200)
        queries = [f"{rng.choice(terms)} {rng.choice(terms)}" for _ in range(500)]
        reads = asyncio.run(read_path(port, gateway.pid, redis_url, ids, queries, seconds))
    finally:
        if gateway is not None:
            gateway.terminate()
            gateway.wait(30)
        for svc in reversed(services):
            svc.stop()
    last = write["halves"][-1]
    py = last["python_us_per_event"]
    result = {
        "memories": write["memories"],
        "redis_keys": write["redis_keys"],
        "redis_bytes_per_memory": last["redis_bytes_per_memory"],
        "redis_bytes_per_memory_at_half": write["halves"][0]["redis_bytes_per_memory"],
        "write_python_us_per_event": py,
        "write_redis_us_per_event": last["redis_us_per_event"],
        "ingest_events_per_core_s": round(1e6 / (py["total"] - py["embed"])),
        "embed_events_per_core_s": round(1e6 / py["embed"]),
        "redis_writes_per_core_s": round(1e6 / last["redis_us_per_event"]),
        "reads": reads,
        "gateway_requests_per_core_s": {k: round(1000 / v["gateway_cpu_ms_per_request"]) for k, v in reads.items()},
        "load1": round(os.getloadavg()[0], 1),
        "wall_s": round(time.monotonic() - started, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

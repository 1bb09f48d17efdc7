"""Where the gateway's memory goes under load: tracemalloc snapshots of an in-process gateway.

    python -m tests.load.heap [--agents 10] [--turn-interval 1] [--warmup 60] [--duration 300]
                              [--frames 12] [--top 15] [--trim]

Starts Tansu, redis-server and the warehouse emulator (app.devstack, free loopback ports), runs
`memstream migrate` and `memstream worker` as subprocesses, creates one agent-scoped API key per
agent with `memstream keys create`, then serves the gateway app with uvicorn inside this process
(same options as `memstream gateway`) and drives it over loopback with the agents of
tests.load.run (same request mix, real keys). tracemalloc starts before the app is built.

After `--warmup` seconds of load it reads the process RSS, glibc's malloc statistics and what
the gateway's bounded caches hold, and takes a snapshot; after `--duration` more seconds, again.
It prints the differences per 1,000 requests: RSS, malloc in use and free-but-held, and the
traced Python heap grouped by file and by traceback (`--frames` deep), so growth inside the
Python heap, growth outside it (C libraries) and allocator retention can be told apart.
`--trim` calls glibc's malloc_trim(0) before each RSS reading (freed-but-held memory then does
not count). `--frames 0` runs without tracemalloc, at full speed (RSS and malloc figures only);
tracing slows the gateway several times over, so compare RSS per request from untraced runs.

The driver's own objects (agent state, latency lists, httpx clients) live in this process too;
they are filtered out of the comparison by file (tests/load, httpx, httpcore) where they are the
allocating frame, and the traceback grouping shows the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import logging
import math
import os
import random
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from app import devstack
from tests.load.mix import TurnMix
from tests.load.run import AGENTS_PER_TENANT, KEY_CREATE_CONCURRENCY, Agent, Run, agent_loop, sample_texts

ROOT = Path(__file__).resolve().parents[2]
DRIVER_FILES = ("*/tests/load/*", "*/httpx/*", "*/httpcore/*", "*/anyio/*", "<frozen *>", "<unknown>")


@dataclass
class Services:
    procs: list[devstack.Service]
    worker: subprocess.Popen[bytes]
    env: dict[str, str]


def start_services(tmp: Path) -> Services:
    lo = devstack.LOOPBACK
    kafka = devstack.kafka_service(devstack.free_port(), tmp).start()
    redis = devstack.redis_service(devstack.free_port(), tmp).start()
    wh = devstack.warehouse_service(devstack.free_port(), tmp / "warehouse", tmp).start(deadline_s=90)
    env = {
        "MEMSTREAM_ENV": "development",
        "MEMSTREAM_KAFKA_BOOTSTRAP": f"{lo}:{kafka.port}",
        "MEMSTREAM_REDIS_URL": f"redis://{lo}:{redis.port}/0",
        "MEMSTREAM_SNOWFLAKE_HOST": lo,
        "MEMSTREAM_SNOWFLAKE_PORT": str(wh.port),
        "MEMSTREAM_SNOWFLAKE_PROTOCOL": "http",
        "MEMSTREAM_GATEWAY_HOST": lo,
        "MEMSTREAM_GATEWAY_PORT": str(devstack.free_port()),
        "MEMSTREAM_DEV_TENANT_HEADER_ENABLED": "true",
    }
    full = {**os.environ, **env}
    subprocess.run([sys.executable, "-m", "app.cli", "migrate"], env=full, cwd=ROOT, check=True, capture_output=True)
    log = open(tmp / "worker.log", "ab")  # noqa: SIM115
    worker = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], env=full, cwd=ROOT, stdout=log, stderr=log)
    return Services([wh, redis, kafka], worker, env)


def stop_services(s: Services) -> None:
    if s.worker.poll() is None:
        s.worker.terminate()
        try:
            s.worker.wait(30)
        except subprocess.TimeoutExpired:
            s.worker.kill()
            s.worker.wait(5)
    for svc in s.procs:
        svc.stop()


_LIBC = ctypes.CDLL("libc.so.6")


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def malloc_trim() -> None:
    _LIBC.malloc_trim(0)


def mallinfo() -> tuple[int, int]:
    """glibc malloc, summed over its arenas: bytes in use (small and mmapped blocks) and bytes
    free but still held from the system."""
    _LIBC.mallinfo2.restype = _MallInfo2
    m = _LIBC.mallinfo2()
    return m.uordblks + m.hblkhd, m.fordblks


@dataclass
class Point:
    requests: int
    rss: int
    untrimmed: int
    traced: int
    malloc_used: int
    malloc_free: int
    tracemalloc_own: int
    snapshot: tracemalloc.Snapshot | None


def caches(app: Any) -> str:
    """What the gateway's bounded caches hold: growth there is by design, up to their bounds."""
    svc = app.state.services
    info = getattr(svc.reader._cached, "cache_info", None)
    docs = info().currsize if info else 0
    vec = svc.vectors
    vec_part = f", vector cache {vec.nbytes / 2**20:.1f} MB in {len(vec._tenants)} tenant(s)" if vec else ""
    return f"doc cache {docs} values{vec_part}, standing cache {len(svc.standing._entries)} packings"


def measure(run: Run, trim: bool) -> Point:
    """RSS and malloc figures first (a snapshot costs memory of its own), then the snapshot."""
    gc.collect()
    untrimmed = psutil.Process().memory_info().rss
    if trim:
        malloc_trim()
    rss = psutil.Process().memory_info().rss
    used, free = mallinfo()
    requests = sum(len(s.latencies_s) for s in run.stats.values())
    if not tracemalloc.is_tracing():
        return Point(requests, rss, untrimmed, 0, used, free, 0, None)
    traced, own = tracemalloc.get_traced_memory()[0], tracemalloc.get_tracemalloc_memory()
    snap = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)] + [tracemalloc.Filter(False, p) for p in DRIVER_FILES]
    )
    return Point(requests, rss, untrimmed, traced, used, free, own, snap)


def report(a: Point, b: Point, frames: int, top: int) -> None:
    n = max(1, b.requests - a.requests)
    per_k = 1000 / n

    def row(name: str, x: int, y: int) -> None:
        print(
            f"{name:<22} {x / 2**20:8.1f} -> {y / 2**20:8.1f} MB  ({(y - x) * per_k / 1024:+8.1f} KB per 1k requests)"
        )

    print(f"\n== {n} requests between the snapshots")
    row("RSS", a.rss, b.rss)
    if b.untrimmed != b.rss or a.untrimmed != a.rss:
        row("RSS before malloc_trim", a.untrimmed, b.untrimmed)
    row("malloc in use", a.malloc_used, b.malloc_used)
    row("malloc free, held", a.malloc_free, b.malloc_free)
    if a.snapshot is None or b.snapshot is None:
        return
    row("traced (driver too)", a.traced, b.traced)
    row("tracemalloc's own", a.tracemalloc_own, b.tracemalloc_own)
    print(f"\n== top {top} files by growth (gateway side; KB per 1k requests, blocks)")
    for stat in b.snapshot.compare_to(a.snapshot, "filename")[:top]:
        print(f"{stat.size_diff * per_k / 1024:+9.1f} KB  {stat.count_diff:+7d}  {stat.traceback[0].filename}")
    print(f"\n== top {top} tracebacks by growth ({frames} frames, innermost last)")
    for stat in b.snapshot.compare_to(a.snapshot, "traceback")[:top]:
        size = f"{stat.size_diff * per_k / 1024:+9.1f} KB per 1k requests"
        print(f"\n{size}  {stat.count_diff:+7d} blocks  ({stat.size / 1024:.0f} KB now)")
        for line in stat.traceback.format(limit=frames):
            print("   ", line)


async def create_keys(env: dict[str, str], members: list[tuple[str, str]]) -> list[str]:
    from tests.load.run import Stack, create_key

    shim: Any = Stack(None, env, "", Path(), Path())  # type: ignore[arg-type]  # create_key reads .env only
    sem = asyncio.Semaphore(KEY_CREATE_CONCURRENCY)
    return list(await asyncio.gather(*(create_key(shim, t, a, sem) for t, a in members)))


async def main_async(args: argparse.Namespace, services: Services) -> None:
    import uvicorn

    from app.gateway.app import create_app
    from app.gateway.server import server_options
    from app.settings import Settings
    from tests.load.run import wait_pipeline

    run_id = os.urandom(3).hex()
    n_tenants = math.ceil(args.agents / AGENTS_PER_TENANT)
    tenants = [f"heap-{run_id}-{i}" for i in range(n_tenants)]
    members = [(tenants[i // AGENTS_PER_TENANT], f"agent-{i}") for i in range(args.agents)]
    keys = await create_keys(services.env, members)

    if args.frames:
        tracemalloc.start(args.frames)
    values: dict[str, Any] = {k.removeprefix("MEMSTREAM_").lower(): v for k, v in services.env.items()}
    settings = Settings(_env_file=None, **values)
    options = server_options(settings) | {"loop": "none", "log_level": "warning"}
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, **options))
    serving = asyncio.create_task(server.serve())
    base_url = f"http://{settings.gateway_host}:{settings.gateway_port}"
    deadline = time.monotonic() + 60
    while not server.started:
        if serving.done() or time.monotonic() > deadline:
            raise RuntimeError("the in-process gateway did not start")
        await asyncio.sleep(0.1)
    await wait_pipeline(base_url, keys[0], 120)

    rng = random.Random(args.seed)
    run = Run(TurnMix(), sample_texts(5000, args.seed))
    agents = []
    for (tenant, agent_id), key in zip(members, keys, strict=True):
        peers = [a for t, a in members if t == tenant and a != agent_id]
        agents.append(Agent(tenant, agent_id, key, peers, f"s-{agent_id}", random.Random(rng.random())))

    t0 = time.monotonic()
    t_end = t0 + args.warmup + args.duration
    turns = asyncio.gather(*(agent_loop(run, a, base_url, args.turn_interval, t0, t_end) for a in agents))
    load = asyncio.ensure_future(turns)
    print(f"load: {args.agents} agents, a turn every ~{args.turn_interval}s; warm-up {args.warmup:.0f}s", flush=True)
    await asyncio.sleep(args.warmup)
    first = measure(run, args.trim)
    print(f"after warm-up: {first.requests} requests, RSS {first.rss / 2**20:.1f} MB; {caches(app)}", flush=True)
    # Turns run late when the traced gateway falls behind: stop at the deadline all the same.
    if not (await asyncio.wait({load}, timeout=args.duration))[0]:
        load.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await load
    for agent in agents:  # the driver's per-agent state, not the gateway's
        agent.acked.clear()
    second = measure(run, args.trim)
    print(f"at the end: {second.requests} requests, RSS {second.rss / 2**20:.1f} MB; {caches(app)}", flush=True)
    server.should_exit = True
    await serving
    report(first, second, args.frames, args.top)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", type=int, default=10)
    p.add_argument("--turn-interval", type=float, default=1.0)
    p.add_argument("--warmup", type=float, default=60.0)
    p.add_argument("--duration", type=float, default=300.0, help="seconds of load after the warm-up snapshot")
    p.add_argument("--frames", type=int, default=12, help="traceback depth; 0: no tracemalloc (RSS and malloc only)")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--trim", action="store_true", help="malloc_trim(0) before each RSS reading")
    p.add_argument("--seed", type=int, default=16)
    args = p.parse_args(argv)
    devstack.require_local_stack()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    import uvloop

    tmp = Path(tempfile.mkdtemp(prefix="memstream-heap-"))
    print(f"services starting (logs in {tmp})", flush=True)
    services = start_services(tmp)
    try:
        uvloop.run(main_async(args, services))
    finally:
        stop_services(services)
    return 0


if __name__ == "__main__":
    sys.exit(main())

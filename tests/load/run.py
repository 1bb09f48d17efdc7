"""Load and soak test: simulated agents against `memstream dev`, with real API keys.

    python -m tests.load.run [--agents 10] [--duration 60] [--turn-interval 3] [--out FILE]

Starts `memstream dev` (broker, Redis, warehouse emulator, worker, gateway) on free loopback ports
in a temporary data directory, creates one agent-scoped API key per agent with `memstream keys
create` (as a user would), then runs the agents for `--duration` seconds and stops the stack.

Driver: asyncio + httpx in one process (no locust: its gevent monkey-patching and a psutil
sampling thread did not mix, and a plain event loop is simpler to reason about). Each agent is a
coroutine with its own keep-alive connection and its own key; every `--turn-interval` seconds
(±20% jitter) it runs one turn of tests.load.mix.TurnMix. An agent is closed-loop within a turn;
turns follow a schedule, and how late each turn starts is reported (`turn_lag`), so a server that
falls behind shows up there instead of being hidden by the agents slowing down.

Every `--sample-interval` seconds the RSS and CPU of each process of the stack (and of this
driver) are sampled with psutil in the same event loop. RSS growth is measured from the first
sample after `--warmup` seconds to the last one. The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from app import devstack
from app.cli import dev_env
from tests.load.mix import EndpointStats, Sample, TurnMix, endpoint_rows, format_rows, plan_turn, rss_drift

ROOT = Path(__file__).resolve().parents[2]
AGENTS_PER_TENANT = 10
KEY_CREATE_CONCURRENCY = 6


# ---- the stack -----------------------------------------------------------------------------------


@dataclass
class Stack:
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    base_url: str
    data_dir: Path
    log: Path


def start_stack(data_dir: Path) -> Stack:
    ports = {
        "--kafka-port": devstack.free_port(),
        "--redis-port": devstack.free_port(),
        "--snowflake-port": devstack.free_port(),
        "--gateway-port": devstack.free_port(),
    }
    argv = [sys.executable, "-m", "app.cli", "dev", "--data-dir", str(data_dir)]
    for flag, port in ports.items():
        argv += [flag, str(port)]
    log = data_dir / "dev.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    out = open(log, "ab")  # noqa: SIM115
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    env = dev_env(*ports.values())
    return Stack(proc, env, f"http://{devstack.LOOPBACK}:{ports['--gateway-port']}", data_dir, log)


def stop_stack(stack: Stack) -> None:
    if stack.proc.poll() is None:
        stack.proc.send_signal(signal.SIGINT)  # `memstream dev` stops its services on SIGINT/SIGTERM
        try:
            stack.proc.wait(90)
        except subprocess.TimeoutExpired:
            stack.proc.kill()
            stack.proc.wait(10)


async def wait_ready(stack: Stack, deadline_s: float) -> None:
    end = time.monotonic() + deadline_s
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=5) as client:
        while time.monotonic() < end:
            if stack.proc.poll() is not None:
                raise RuntimeError(f"memstream dev exited ({stack.proc.returncode}); see {stack.log}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/ready")).status_code == 200:
                    return
            await asyncio.sleep(0.5)
    raise TimeoutError(f"gateway not ready within {deadline_s}s; see {stack.log}")


async def create_key(stack: Stack, tenant: str, agent: str, sem: asyncio.Semaphore) -> str:
    argv = [sys.executable, "-m", "app.cli", "keys", "create", "--tenant", tenant, "--agent", agent]
    argv += ["--role", "reader", "--role", "writer", "--name", f"load {agent}"]
    async with sem:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=ROOT,
            env={**os.environ, **stack.env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"memstream keys create failed: {err.decode()[-500:]}")
    return str(json.loads(out)["api_key"])


# ---- the agents ----------------------------------------------------------------------------------


def sample_texts(n: int, seed: int) -> list[str]:
    """Real chat messages (chitchat-dataset, part of the `local` extra) as what agents remember."""
    import chitchat_dataset

    rng = random.Random(seed)
    texts: list[str] = []
    for conv in chitchat_dataset.Dataset().values():
        for turn in conv["messages"]:
            texts += [m["text"] for m in turn if m["text"] and len(m["text"]) > 20]
        if len(texts) >= n * 4:
            break
    rng.shuffle(texts)
    return texts[:n]


@dataclass
class Run:
    mix: TurnMix
    texts: list[str]
    stats: dict[str, EndpointStats] = field(default_factory=lambda: defaultdict(EndpointStats))
    turn_lag_s: list[float] = field(default_factory=list)
    turns: int = 0


@dataclass
class Agent:
    tenant: str
    agent_id: str
    key: str
    peers: list[str]
    session_id: str
    rng: random.Random
    memory_ids: list[str] = field(default_factory=list)
    acked: set[str] = field(default_factory=set)
    stored: int = 0

    def next_text(self, texts: list[str]) -> str:
        """A message this agent has not stored before: the worker drops a repeat of the same text
        in the same scope as a duplicate, and a retrieve of its id would rightly be a 404."""
        n, self.stored = self.stored, self.stored + 1
        rounds, i = divmod(n, len(texts))
        text = texts[(self.offset + i * 7919) % len(texts)]  # 7919: a prime, so i runs through every text
        return text if not rounds else f"{text} ({rounds})"

    @property
    def offset(self) -> int:
        return int(self.agent_id.rsplit("-", 1)[-1]) * 997


def _words(text: str, rng: random.Random, k: int = 3) -> str:
    words = [w.strip(".,!?;:'\"()").lower() for w in text.split()]
    words = [w for w in words if len(w) > 3] or ["memory"]
    return " ".join(rng.sample(words, min(k, len(words))))


async def call(
    run: Run, label: str, client: httpx.AsyncClient, method: str, url: str, ok: int, **kw: Any
) -> httpx.Response | None:
    t0 = time.perf_counter()
    try:
        resp = await client.request(method, url, **kw)
    except httpx.HTTPError as exc:
        run.stats[label].record(time.perf_counter() - t0, type(exc).__name__)
        return None
    elapsed = time.perf_counter() - t0
    if label == "search" and resp.status_code == ok and resp.json().get("warehouse") == "used":
        label = "search+warehouse"
    run.stats[label].record(elapsed, None if resp.status_code == ok else str(resp.status_code))
    return resp if resp.status_code == ok else None


async def do_op(run: Run, a: Agent, client: httpx.AsyncClient, op: str, earlier: list[str]) -> None:
    rng = a.rng
    text = rng.choice(run.texts)
    if op == "context":
        params = {"session_id": a.session_id, "agent_id": a.agent_id, "budget_tokens": 2000}
        await call(run, op, client, "GET", "/api/v2/context", 200, params=params)
    elif op == "search":
        await call(run, op, client, "GET", "/api/v2/memory/search", 200, params={"q": _words(text, rng)})
    elif op == "retrieve":  # one of its memories from an earlier turn (this turn's may not be applied yet)
        mid = rng.choice(earlier[-50:])
        await call(run, op, client, "GET", "/api/v2/memory/retrieve", 200, params={"memory_id": mid})
    elif op in ("store", "store_visible"):
        text = a.next_text(run.texts)
        body: dict[str, Any] = {
            "type": "event",
            "session_id": a.session_id,
            "agent_id": a.agent_id,
            "content": {"text": text},
        }
        params = {}
        if op == "store_visible":  # a decision the agent reads back at once; it supersedes the last one
            body |= {"type": "decision", "key": f"plan-{a.agent_id}", "content": {"text": f"decided: {text}"}}
            params = {"wait": "visible"}
        resp = await call(run, op, client, "POST", "/api/v2/memory/store", 202, json=body, params=params)
        if resp is not None:
            a.memory_ids.append(resp.json()["memory_id"])
    elif op == "handoff_create":
        body = {"to_agent": rng.choice(a.peers), "task": f"follow up: {text[:200]}", "session_id": a.session_id}
        await call(run, op, client, "POST", "/api/v2/handoffs", 202, json=body)
    elif op == "handoff_list":
        resp = await call(run, op, client, "GET", "/api/v2/handoffs", 200, params={"to_agent": a.agent_id})
        if resp is None:
            return
        for packet in resp.json()["handoffs"][:2]:
            hid = packet["handoff_id"]
            if hid in a.acked:  # the ack's new version may not have reached the hotset yet
                continue
            a.acked.add(hid)
            url = f"/api/v2/handoffs/{hid}/ack"
            await call(run, "handoff_ack", client, "POST", url, 200, json={"agent_id": a.agent_id})
    else:
        raise ValueError(op)


async def agent_loop(run: Run, a: Agent, base_url: str, interval_s: float, t_start: float, t_end: float) -> None:
    headers = {"X-API-Key": a.key}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client:
        next_turn = t_start + a.rng.uniform(0, interval_s)
        while True:
            now = time.monotonic()
            if next_turn >= t_end:
                return
            if next_turn > now:
                await asyncio.sleep(next_turn - now)
                now = time.monotonic()
            run.turn_lag_s.append(now - next_turn)
            run.turns += 1
            a.memory_ids = a.memory_ids[-200:]
            earlier = a.memory_ids
            plan = plan_turn(run.mix, a.rng, can_retrieve=bool(earlier), has_peers=bool(a.peers))
            a.memory_ids = []
            for op in plan:
                await do_op(run, a, client, op, earlier)
            a.memory_ids = earlier + a.memory_ids
            next_turn += interval_s * a.rng.uniform(0.8, 1.2)


# ---- sampling ------------------------------------------------------------------------------------

LABELS = (
    ("tansu", "kafka"),
    ("redis-server", "redis"),
    ("app.warehouse_emulator", "warehouse"),
    ("app.cli worker", "worker"),
    ("app.cli gateway", "gateway"),
    ("app.cli dev", "dev"),
)


def label_of(cmdline: list[str]) -> str:
    joined = " ".join(cmdline)
    return next((label for needle, label in LABELS if needle in joined), Path(cmdline[0]).name if cmdline else "?")


def stack_processes(stack: Stack) -> dict[str, psutil.Process]:
    root = psutil.Process(stack.proc.pid)
    found = {"driver": psutil.Process(os.getpid())}
    for p in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            found.setdefault(label_of(p.cmdline()), p)
    return found


async def sampler(
    procs: dict[str, psutil.Process],
    series: dict[str, list[Sample]],
    loads: list[float],
    t0: float,
    every_s: float,
    stop: asyncio.Event,
) -> None:
    """RSS and CPU of each process, and the machine's 1-minute load average (other work on a
    shared machine shows up in latency: the report says how busy the machine was)."""
    for p in procs.values():
        with contextlib.suppress(psutil.Error):
            p.cpu_percent(None)  # the first call starts the interval
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
        t = time.monotonic() - t0
        for label, p in procs.items():
            with contextlib.suppress(psutil.Error):
                series[label].append(Sample(round(t, 1), p.memory_info().rss, p.cpu_percent(None)))
        loads.append(os.getloadavg()[0])
        if stop.is_set():
            return


# ---- main ----------------------------------------------------------------------------------------


async def wait_pipeline(base_url: str, key: str, deadline_s: float) -> None:
    """One write read back through the worker: the stack is serving end to end before the clock starts."""
    end = time.monotonic() + deadline_s
    async with httpx.AsyncClient(base_url=base_url, headers={"X-API-Key": key}, timeout=10) as client:
        while time.monotonic() < end:
            body = {"type": "event", "content": {"text": "load test warm-up"}}
            r = await client.post("/api/v2/memory/store", params={"wait": "visible"}, json=body)
            if r.status_code == 202 and r.json().get("status") == "visible":
                return
            await asyncio.sleep(1)
    raise TimeoutError("the worker did not make a write visible in time")


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="memstream-load-"))
    stack = start_stack(data_dir)
    try:
        print(f"memstream dev starting (data and logs in {data_dir})", flush=True)
        await wait_ready(stack, 180)
        run_id = uuid.uuid4().hex[:6]
        n_tenants = math.ceil(args.agents / AGENTS_PER_TENANT)
        tenants = [f"load-{run_id}-{i}" for i in range(n_tenants)]
        members = [(tenants[i // AGENTS_PER_TENANT], f"agent-{i}") for i in range(args.agents)]
        t_keys = time.monotonic()
        sem = asyncio.Semaphore(KEY_CREATE_CONCURRENCY)
        keys = await asyncio.gather(*(create_key(stack, t, a, sem) for t, a in members))
        print(f"{len(keys)} API keys created with `memstream keys create` in {time.monotonic() - t_keys:.1f}s")
        await wait_pipeline(stack.base_url, keys[0], 120)

        rng = random.Random(args.seed)
        run = Run(TurnMix(), sample_texts(5000, args.seed))
        agents = []
        for (tenant, agent_id), key in zip(members, keys, strict=True):
            peers = [a for t, a in members if t == tenant and a != agent_id]
            agents.append(Agent(tenant, agent_id, key, peers, f"s-{agent_id}", random.Random(rng.random())))

        procs = stack_processes(stack)
        series: dict[str, list[Sample]] = defaultdict(list)
        stop = asyncio.Event()
        t0 = time.monotonic()
        loads: list[float] = []
        sampling = asyncio.create_task(sampler(procs, series, loads, t0, args.sample_interval, stop))
        print(
            f"running {args.agents} agents in {n_tenants} tenant(s) for {args.duration:.0f}s, a turn every "
            f"~{args.turn_interval}s (~{run.mix.expected_requests():.1f} requests per turn)",
            flush=True,
        )
        t_end = t0 + args.duration
        await asyncio.gather(*(agent_loop(run, a, stack.base_url, args.turn_interval, t0, t_end) for a in agents))
        elapsed = time.monotonic() - t0
        stop.set()
        await sampling
        if stack.proc.poll() is not None:
            raise RuntimeError(f"memstream dev exited during the run; see {stack.log}")
        return report(args, run, elapsed, series, loads)
    finally:
        stop_stack(stack)


def report(
    args: argparse.Namespace, run: Run, elapsed: float, series: dict[str, list[Sample]], loads: list[float]
) -> dict[str, Any]:
    rows = endpoint_rows(run.stats, elapsed)
    cols = ["endpoint", "requests", "rps", "p50_ms", "p95_ms", "p99_ms", "max_ms", "errors", "error_kinds"]
    print(f"\n== requests ({elapsed:.0f}s, {args.agents} agents, {run.turns} turns)")
    print(format_rows(rows, cols))
    lag = sorted(run.turn_lag_s)
    lag_row = {
        "p50_ms": round(lag[len(lag) // 2] * 1000, 1) if lag else None,
        "p99_ms": round(lag[min(len(lag) - 1, int(len(lag) * 0.99))] * 1000, 1) if lag else None,
        "max_ms": round(lag[-1] * 1000, 1) if lag else None,
    }
    print(f"turn start lag behind schedule: {lag_row}")
    machine = {
        "cpus": os.cpu_count(),
        "load1_mean": round(sum(loads) / len(loads), 2) if loads else None,
        "load1_max": round(max(loads), 2) if loads else None,
    }
    print(f"machine: {machine} (load average: runnable processes, all users)")
    print(f"\n== processes (RSS MB / CPU % of one core, every {args.sample_interval:.0f}s)")
    labels = sorted(series)
    times = [s.t_s for s in series[labels[0]]] if labels else []
    for i, t in enumerate(times):
        cells = []
        for label in labels:
            s = series[label][i] if i < len(series[label]) else None
            cells.append(f"{label} {s.rss_bytes / 2**20:.0f}/{s.cpu_percent:.0f}" if s else f"{label} -")
        print(f"t={t:6.1f}s  " + "  ".join(cells))
    warmup = min(args.warmup, elapsed / 2)
    drift = {label: rss_drift(series[label], warmup) for label in labels}
    print(f"\n== RSS after warm-up ({warmup:.0f}s) vs end")
    print(format_rows([{"process": k, **v} for k, v in drift.items()], ["process", *next(iter(drift.values()))]))
    result = {
        "agents": args.agents,
        "duration_s": round(elapsed, 1),
        "turn_interval_s": args.turn_interval,
        "turns": run.turns,
        "throughput_rps": rows[-1]["rps"],
        "errors": rows[-1]["errors"],
        "endpoints": {r["endpoint"]: {k: v for k, v in r.items() if k != "endpoint"} for r in rows},
        "turn_lag_ms": lag_row,
        "machine": machine,
        "processes": drift,
    }
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", type=int, default=10)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load (quick: 60, soak: 600)")
    p.add_argument("--turn-interval", type=float, default=3.0, help="seconds between an agent's turns")
    p.add_argument("--warmup", type=float, default=None, help="seconds before the RSS baseline (default: 20%%)")
    p.add_argument("--sample-interval", type=float, default=None, help="seconds between samples")
    p.add_argument("--seed", type=int, default=16)
    p.add_argument("--out", type=Path, help="also write the JSON result here")
    args = p.parse_args(argv)
    if args.warmup is None:
        args.warmup = min(60.0, args.duration * 0.2)
    if args.sample_interval is None:
        args.sample_interval = 5.0 if args.duration <= 120 else 15.0
    import uvloop  # a runtime dependency: the gateway runs on it too

    result = uvloop.run(main_async(args))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, separators=(",", ":")))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())

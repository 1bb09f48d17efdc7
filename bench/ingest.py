"""Ingest benchmark: published -> visible in the Redis hotset, with every policy on.

Compares, in one run, each on its own fresh broker and Redis, their rounds taking turns:
  memstream  the real worker (`memstream worker`): validate, redact, privacy, dedupe, supersede,
             publish records, versioned Lua writes to Redis
  baseline   a bare Faust forward agent (consume + one send per message) on a Faust app with its
             own Kafka clients, tuned as well as Faust allows here (bench/faust_baseline.py)
  ceiling    a plain confluent-kafka consumer + orjson + pipelined Redis writes, no policies
Then measures publish->visible latency of the real worker at a fixed offered rate, timing each
event from just before it is produced to the Redis keyspace notification of its write.

Usage: python bench/ingest.py [--quick]   (last line: one JSON object of figures)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any, TypeVar

import orjson
import redis
from confluent_kafka import Consumer, Producer

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")
sys.path.insert(0, str(ROOT))

from app import devstack  # noqa: E402
from app.kafka import ensure_topics, publish_sync  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.workload import conversation_events  # noqa: E402
from sinks.hotset import keys  # noqa: E402


def wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.005)


class Env:
    def __init__(self, tmp: Path) -> None:
        self.kafka = devstack.kafka_service(devstack.free_port(), tmp).start()
        self.redis = devstack.redis_service(devstack.free_port(), tmp).start()
        self.bootstrap = f"127.0.0.1:{self.kafka.port}"
        self.redis_url = f"redis://127.0.0.1:{self.redis.port}/0"
        self.rds = redis.Redis.from_url(self.redis_url, decode_responses=True)
        self.tmp = tmp

    def settings(self, prefix: str) -> Settings:
        return Settings(
            _env_file=None,
            kafka_bootstrap=self.bootstrap,
            redis_url=self.redis_url,
            topic_prefix=prefix,
            worker_group=f"{prefix}worker",
        )

    def stop(self) -> None:
        self.kafka.stop()
        self.redis.stop()


def payloads(n: int, tenants: list[str], tag: str) -> list[tuple[bytes, bytes, str, str]]:
    out = []
    for e in conversation_events(tenants, n, tag=tag):
        out.append((e["tenant_id"].encode(), orjson.dumps(e), e["tenant_id"], e["event_id"]))
    return out


def produce_all(bootstrap: str, topic: str, msgs: list[tuple[bytes, bytes, str, str]]) -> None:
    publish_sync(Settings(_env_file=None, kafka_bootstrap=bootstrap), [(k, v) for k, v, _, _ in msgs], topic)


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env={**os.environ, **env}, stdout=open(log, "ab"), stderr=subprocess.STDOUT, cwd=ROOT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def memstream_writes(rds: redis.Redis, tenants: list[str]) -> int:
    pipe = rds.pipeline(transaction=False)
    for t in tenants:
        pipe.hget(keys.stats(t), "writes")
        pipe.hget(keys.stats(t), "dedupes")
    vals = pipe.execute()
    return sum(int(v or 0) for v in vals)


def spawn_ingest_worker(env: Env, name: str) -> subprocess.Popen[bytes]:
    """`memstream worker` on topics and group prefixed `<name>.`. Ingest only: the warehouse sink
    has its own benchmark (bench/sink.py) and process option."""
    worker_env = {
        "MEMSTREAM_KAFKA_BOOTSTRAP": env.bootstrap,
        "MEMSTREAM_REDIS_URL": env.redis_url,
        "MEMSTREAM_TOPIC_PREFIX": f"{name}.",
        "MEMSTREAM_WORKER_GROUP": f"{name}.worker",
        "MEMSTREAM_LOG_LEVEL": "WARNING",
    }
    argv = [sys.executable, "-m", "app.cli", "worker", "--agents", "ingest"]
    return spawn(argv, worker_env, env.tmp / f"{name}-worker.log")


def memstream_rounds(env: Env, n: int, rounds: int) -> Generator[float, None, None]:
    """The real worker: one rate (events/s) per round, from publish to the last hotset write."""
    settings = env.settings("bm.")
    ensure_topics(settings)
    proc = spawn_ingest_worker(env, "bm")
    try:
        warm = payloads(1, ["bmwarm"], "warm")
        produce_all(env.bootstrap, settings.topic_events, warm)
        wait(lambda: memstream_writes(env.rds, ["bmwarm"]) >= 1, 90, "memstream worker did not start")
        for r in range(rounds):
            tenants = [f"bm{r}-{i}" for i in range(8)]
            msgs = payloads(n, tenants, f"bm{r}")
            t0 = time.perf_counter()
            produce_all(env.bootstrap, settings.topic_events, msgs)
            wait(lambda t=tenants: memstream_writes(env.rds, t) >= n, 300, "memstream did not finish")
            yield n / (time.perf_counter() - t0)
    finally:
        stop(proc)


def count_topic(bootstrap: str, topic: str, expected: int, timeout_s: float) -> float:
    """Consume `topic` until `expected` messages arrived; return the time the last one arrived."""
    from confluent_kafka import TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"count-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    # assign, not subscribe: a group join would dominate the measurement.
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([TopicPartition(topic, p, 0) for p in parts])
    seen = 0
    deadline = time.monotonic() + timeout_s
    try:
        while seen < expected:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {seen}/{expected} on {topic}")
            seen += sum(1 for m in c.consume(10000, timeout=0.05) if not m.error())
        return time.perf_counter()
    finally:
        c.close()


def best(rates: list[float], name: str) -> float:
    """Throughput is the best of the rounds: noise from other processes only ever slows a round."""
    print(f"  {name} rounds: {', '.join(f'{r:,.0f}' for r in rates)} events/s", flush=True)
    return max(rates)


def alternate(contenders: dict[str, Generator[float, None, None]], rounds: int) -> dict[str, list[float]]:
    """Round r of every contender, then round r + 1: a machine that slows or speeds up over the
    run taxes each contender alike, and each round has a neighbour to compare with."""
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    try:
        for _ in range(rounds):
            for name, run in contenders.items():
                rates[name].append(next(run))
    finally:
        for run in contenders.values():
            run.close()  # stops the contender's process
    return rates


def round_ratios(mine: list[float], theirs: list[float]) -> list[float]:
    """The ratio of each round to the other contender's round run right after it."""
    return [m / t for m, t in zip(mine, theirs, strict=True)]


def forward_rounds(env: Env, n: int, rounds: int) -> Generator[float, None, None]:
    """The bare Faust forward agent (bench/faust_baseline.py): one rate per round."""
    settings = env.settings("bf.")
    ensure_topics(settings)
    out = "bf.forwarded"
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": env.bootstrap})
    admin.create_topics([NewTopic(out, num_partitions=settings.topic_partitions, replication_factor=1)])[out].result(10)
    proc = spawn(
        [
            sys.executable,
            "-m",
            "bench.ingest_baselines",
            "forward",
            "--bootstrap",
            env.bootstrap,
            "--source",
            settings.topic_events,
            "--dest",
            out,
            "--group",
            "bf.group",
        ],
        {},
        env.tmp / "bf.log",
    )
    try:
        produce_all(env.bootstrap, settings.topic_events, payloads(1, ["bfwarm"], "warm"))
        count_topic(env.bootstrap, out, 1, 90)
        for r in range(rounds):
            msgs = payloads(n, [f"bf{i}" for i in range(8)], f"bf{r}")
            t0 = time.perf_counter()
            produce_all(env.bootstrap, settings.topic_events, msgs)
            t1 = count_topic(env.bootstrap, out, n * (r + 1) + 1, 300)
            yield n / (t1 - t0)
    finally:
        stop(proc)


def ceiling_rounds(env: Env, n: int, rounds: int) -> Generator[float, None, None]:
    """A plain confluent consumer + pipelined Redis writes, no policies: one rate per round."""
    settings = env.settings("bc.")
    ensure_topics(settings)
    proc = spawn(
        [
            sys.executable,
            "-m",
            "bench.ingest_baselines",
            "ceiling",
            "--bootstrap",
            env.bootstrap,
            "--source",
            settings.topic_events,
            "--group",
            "bc.group",
            "--redis-url",
            env.redis_url,
        ],
        {},
        env.tmp / "bc.log",
    )
    try:
        produce_all(env.bootstrap, settings.topic_events, payloads(1, ["bcwarm"], "warm"))
        wait(lambda: int(env.rds.get("ceil:count") or 0) >= 1, 90, "ceiling consumer did not start")
        for r in range(rounds):
            msgs = payloads(n, [f"bc{i}" for i in range(8)], f"bc{r}")
            t0 = time.perf_counter()
            produce_all(env.bootstrap, settings.topic_events, msgs)
            want = n * (r + 1) + 1
            wait(lambda w=want: int(env.rds.get("ceil:count") or 0) >= w, 300, "ceiling did not finish")
            yield n / (time.perf_counter() - t0)
    finally:
        stop(proc)


def bench_latency(env: Env, rate: int, seconds: float) -> list[float]:
    """Offered load at `rate` events/s; per-event publish -> hotset-write latency in ms."""
    settings = env.settings("bl.")
    ensure_topics(settings)
    tenant = "bltenant"
    # Every applied event sets its ledger key exactly once (duplicates too), in the same Lua call
    # that writes the memory: its notification is the moment the event is visible.
    env.rds.config_set("notify-keyspace-events", "K$")
    proc = spawn_ingest_worker(env, "bl")
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    prefix = f"__keyspace@0__:{keys.seen(tenant, '')}"
    sub = redis.Redis.from_url(env.redis_url, decode_responses=True).pubsub()
    sub.psubscribe(prefix.replace("{", "[{]").replace("}", "[}]") + "*")
    stop_listen = threading.Event()

    def listen() -> None:
        while not stop_listen.is_set():
            m = sub.get_message(timeout=0.05)
            if m and m["type"] == "pmessage" and m["data"] == "set":
                mid = m["channel"][len(prefix) :]
                seen.setdefault(mid, time.perf_counter())

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    try:
        # linger 5 ms: what a producing service would configure; 1,000 one-message requests/s
        # would measure the local broker (Tansu burns a core on them), not memstream.
        p = Producer({"bootstrap.servers": env.bootstrap, "acks": "all", "linger.ms": 5})
        warm = payloads(1, [tenant], "blwarm")
        p.produce(settings.topic_events, warm[0][1], key=warm[0][0])
        p.flush(10)
        wait(lambda: len(seen) >= 1, 90, "latency worker did not start")
        seen.clear()
        msgs = payloads(int(rate * seconds), [tenant], "bl")
        t0 = time.perf_counter()
        for i, (key, value, _, event_id) in enumerate(msgs):
            due = t0 + i / rate
            while (now := time.perf_counter()) < due:
                time.sleep(min(0.001, due - now))  # pacing the offered load, not synchronisation
            sent[event_id] = time.perf_counter()
            p.produce(settings.topic_events, value, key=key)
            p.poll(0)
        p.flush(30)
        wait(lambda: all(m in seen for m in sent), 60, "not all latency events became visible")
    finally:
        stop_listen.set()
        listener.join(2)
        stop(proc)
    return [(seen[m] - sent[m]) * 1000 for m in sent if m in seen]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller run, under 60 s")
    ap.add_argument("--events", type=int, default=None)
    ap.add_argument("--rate", type=int, default=1000)
    a = ap.parse_args()
    n = a.events or (10000 if a.quick else 50000)
    rounds = 2 if a.quick else 3
    seconds = 8.0 if a.quick else 30.0
    import tempfile

    def fresh(run: Callable[[Env], T]) -> T:
        # Each contender on its own broker and Redis: the in-memory broker slows as it holds more
        # records, which would tax whoever runs later.
        env = Env(Path(tempfile.mkdtemp(prefix="bench-ingest-")))
        try:
            return run(env)
        finally:
            env.stop()

    print(
        f"throughput: {rounds} rounds of {n} events each, the contenders' rounds in turns (best round "
        f"counts); latency: {a.rate}/s for {seconds:.0f}s",
        flush=True,
    )
    # Each contender on its own broker and Redis (the in-memory broker slows as it holds more
    # records); all three stay up, so that their rounds can take turns.
    envs = [Env(Path(tempfile.mkdtemp(prefix="bench-ingest-"))) for _ in range(3)]
    try:
        rates = alternate(
            {
                "memstream": memstream_rounds(envs[0], n, rounds),
                "forward": forward_rounds(envs[1], n, rounds),
                "ceiling": ceiling_rounds(envs[2], n, rounds),
            },
            rounds,
        )
    finally:
        for env in envs:
            env.stop()
    ms = best(rates["memstream"], "memstream")
    fw = best(rates["forward"], "forward")
    ce = best(rates["ceiling"], "ceiling")
    paired = round_ratios(rates["memstream"], rates["forward"])
    print(f"memstream worker (all policies + records + hotset): {ms:,.0f} events/s", flush=True)
    print(f"baseline: bare Faust forward agent:                 {fw:,.0f} events/s", flush=True)
    print(f"ceiling: confluent consumer + pipelined Redis:       {ce:,.0f} events/s", flush=True)
    print(
        f"ratio of each memstream round to the baseline round after it: {', '.join(f'{r:.2f}' for r in paired)} "
        f"(median {statistics.median(paired):.2f})",
        flush=True,
    )
    lat = fresh(lambda env: bench_latency(env, a.rate, seconds))
    p50, p95, p99 = pct(lat, 0.50), pct(lat, 0.95), pct(lat, 0.99)
    print(
        f"latency at {a.rate}/s over {len(lat)} events: p50 {p50:.1f} ms, p95 {p95:.1f} ms, "
        f"p99 {p99:.1f} ms (mean {statistics.mean(lat):.1f})",
        flush=True,
    )
    print(
        json.dumps(
            {
                "events": n,
                "rounds": rounds,
                "events_per_s": round(ms),
                "baseline_events_per_s": round(fw),
                "ratio": round(ms / fw, 2),
                "round_ratio_median": round(statistics.median(paired), 2),
                "ceiling_events_per_s": round(ce),
                "ceiling_ratio": round(ms / ce, 3),
                "offered_rate": a.rate,
                "p50_ms": round(p50, 1),
                "p95_ms": round(p95, 1),
                "p99_ms": round(p99, 1),
            }
        )
    )


if __name__ == "__main__":
    main()

"""Baselines for bench/ingest.py, each run as its own process like the real worker.

forward: a bare Faust agent that consumes raw bytes and sends each message on (one send each),
         on the tuned Faust app of bench/faust_baseline.py.
ceiling: a plain confluent-kafka consumer doing orjson parse + one pipelined Redis write per
         batch, no policies (what the hardware allows without Faust's per-message path).
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import orjson


def run_forward(bootstrap: str, source: str, dest: str, group: str) -> None:
    import faust
    import uvloop

    from app.settings import Settings
    from bench.faust_baseline import create_kafka_app

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.set_event_loop(asyncio.new_event_loop())
    app = create_kafka_app(Settings(_env_file=None, kafka_bootstrap=bootstrap), group)
    src = app.topic(source, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    out = app.topic(dest, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    async def forward(stream: faust.StreamT[bytes]) -> None:
        async for value in stream:
            await out.send(value=value)

    app.agent(src, name="bench.forward")(forward)
    faust.Worker(app, loglevel="WARNING", quiet=True, override_logging=False).execute_from_commandline()


def run_ceiling(bootstrap: str, source: str, group: str, redis_url: str) -> None:
    import redis
    from confluent_kafka import Consumer

    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    rds = redis.Redis.from_url(redis_url)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
        }
    )
    consumer.subscribe([source])
    while not stop:
        msgs = consumer.consume(1000, timeout=0.05)
        if not msgs:
            continue
        pipe = rds.pipeline(transaction=False)
        n = 0
        for m in msgs:
            if m.error():
                continue
            e = orjson.loads(m.value())
            key = f"ceil:{{{e['tenant_id']}}}:m:{e['event_id']}"
            pipe.hset(key, mapping={"j": m.value(), "v": str(m.offset())})
            pipe.zadd(f"ceil:{{{e['tenant_id']}}}:ix:all", {e["event_id"]: m.offset()})
            n += 1
        pipe.incrby("ceil:count", n)
        pipe.execute()
    consumer.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["forward", "ceiling"])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--source", required=True)
    p.add_argument("--dest", default="")
    p.add_argument("--group", required=True)
    p.add_argument("--redis-url", default="")
    a = p.parse_args()
    if a.mode == "forward":
        run_forward(a.bootstrap, a.source, a.dest, a.group)
    else:
        run_ceiling(a.bootstrap, a.source, a.group, a.redis_url)


if __name__ == "__main__":
    main()

"""A downstream consumer: follows `memory.records` (the canonical record of every processed memory)
with confluent-kafka and prints each one.

    MEMSTREAM_KAFKA_BOOTSTRAP=127.0.0.1:19092 python examples/records_consumer.py --from-beginning

`--short` stops after `--max` records or `--idle-s` seconds without one. Records carry no secrets:
the worker redacts before it publishes. Needs `pip install memstream-client[producer]`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bootstrap", default=os.environ.get("MEMSTREAM_KAFKA_BOOTSTRAP"))
    p.add_argument("--topic", default=os.environ.get("MEMSTREAM_TOPIC_PREFIX", "") + "memory.records")
    p.add_argument("--group", default=None, help="consumer group (default: a new one, so nothing is skipped)")
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest record (new group only)")
    p.add_argument("--tenant", help="only this tenant's records")
    p.add_argument("--short", action="store_true", help="stop after --max records or --idle-s quiet seconds")
    p.add_argument("--max", type=int, default=20)
    p.add_argument("--idle-s", type=float, default=15.0)
    args = p.parse_args(argv)
    if not args.bootstrap:
        sys.exit("set MEMSTREAM_KAFKA_BOOTSTRAP or pass --bootstrap")

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group or f"records-consumer-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest" if args.from_beginning else "latest",
            "enable.auto.commit": True,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
        }
    )
    consumer.subscribe([args.topic])
    printed, last = 0, time.monotonic()
    try:
        while not (args.short and (printed >= args.max or time.monotonic() - last > args.idle_s)):
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                print(f"error: {err}", file=sys.stderr)
                return 1
            key = (msg.key() or b"").decode()
            if args.tenant and not key.startswith(f"{args.tenant}/"):
                continue
            record = json.loads(msg.value() or b"null")
            if not isinstance(record, dict):
                continue
            text = ((record.get("content") or {}).get("text") or "")[:80]
            state = "deleted" if record.get("deleted_at") else "superseded" if record.get("superseded_by") else "live"
            print(
                f"{record['tenant_id']}/{record['memory_id']} {record.get('type')} v{record['version']} "
                f"[{state}] {text}",
                flush=True,
            )
            printed += 1
            last = time.monotonic()
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    print(f"{printed} record(s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

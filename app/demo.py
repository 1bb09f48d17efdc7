"""`make demo`: start the embedded stack, publish a realistic workload, show what memstream holds.

Real conversations from chitchat-dataset plus scripted decisions, tasks, secrets, duplicates,
private and invalid events. Stops everything and exits 0 unless `--keep-running` is given.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import redis

from app import devstack, keys
from app.cli import DevStack
from app.kafka import caught_up, publish_sync
from app.settings import Settings
from app.workload import conversation_events, scenario_events

TENANTS = ["acme", "globex", "initech"]


def publish(settings: Settings, events: list[dict[str, Any]]) -> dict[int, int]:
    return publish_sync(settings, [(e["tenant_id"].encode(), orjson.dumps(e)) for e in events], settings.topic_events)


def wait_caught_up(settings: Settings, group: str, topic: str, ends: dict[int, int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not caught_up(settings, group, topic, ends):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{group} did not catch up on {topic} within {timeout_s}s")
        time.sleep(0.1)


def show_hotset(rds: redis.Redis, tenants: list[str]) -> None:
    print("\n== Redis hotset ==")
    header = f"{'tenant':<10}{'memories':>10}{'writes':>8}{'dedupes':>9}{'supersed.':>10}{'redacted':>9}{'private':>8}"
    print(header)
    for t in tenants:
        s = {k: int(v) for k, v in rds.hgetall(keys.stats(t)).items()}
        redacted = sum(v for k, v in s.items() if k.startswith("redacted:"))
        print(f"{t:<10}{rds.zcard(keys.recent(t)):>10}{s.get('writes', 0):>8}{s.get('dedupes', 0):>9}"
              f"{s.get('superseded', 0):>10}{redacted:>9}{s.get('privacy_dropped', 0):>8}")
    by_type: dict[str, int] = {}
    for t in tenants:
        for k, v in rds.hgetall(keys.stats(t)).items():
            if k.startswith("type:"):
                by_type[k[5:]] = by_type.get(k[5:], 0) + int(v)
    print("by type:", ", ".join(f"{k}={v}" for k, v in sorted(by_type.items())))
    kinds: dict[str, int] = {}
    for t in tenants:
        for k, v in rds.hgetall(keys.stats(t)).items():
            if k.startswith("redacted:"):
                kinds[k[9:]] = kinds.get(k[9:], 0) + int(v)
    print("redactions by kind:", ", ".join(f"{k}={v}" for k, v in sorted(kinds.items())) or "none")
    print("dead letters:", rds.hget(keys.GLOBAL_STATS, "deadletters") or 0)
    active = rds.hget(keys.active("acme"), keys.active_field("decision", "warehouse"))
    if active:
        mid = active.split("|", 1)[1]
        rec = orjson.loads(rds.hget(keys.memory("acme", mid), "j") or b"{}")
        print(f"active decision 'warehouse' for acme: {rec['content']['text']!r} ({mid})")
    for mid in rds.zrevrange(keys.by_session("acme", "demo-session"), 0, -1):
        raw = rds.hget(keys.memory("acme", mid), "j")
        if raw and "REDACTED" in raw:
            print("a redacted memory:", orjson.loads(raw)["content"]["text"])
            break


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=3000, help="chat messages to publish (default 3000)")
    parser.add_argument("--keep-running", action="store_true", help="leave the stack up; Ctrl-C stops it")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a fresh temporary folder")
    args = parser.parse_args(argv)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="memstream-demo-"))
    stack_args = argparse.Namespace(
        kafka_port=devstack.free_port(), redis_port=devstack.free_port(),
        snowflake_port=devstack.free_port(), gateway_port=devstack.free_port(), data_dir=data_dir,
    )
    stack = DevStack(stack_args)
    try:
        print(f"starting the embedded stack (logs in {stack.log_dir})", flush=True)
        stack.start()
        settings = Settings(_env_file=None, **{k[10:].lower(): v for k, v in stack.env.items()})
        events = list(conversation_events(TENANTS, args.events))
        for t in TENANTS:
            events += scenario_events(t)
        started = time.monotonic()
        ends = publish(settings, events)
        print(f"published {len(events)} events ({args.events} chat messages from chitchat-dataset "
              f"+ scripted decisions, tasks, secrets, duplicates, private and invalid events)", flush=True)
        wait_caught_up(settings, settings.worker_group, settings.topic_events, ends, 180)
        print(f"the worker consumed all of them in {time.monotonic() - started:.1f}s")
        rds = redis.Redis.from_url(settings.redis_url.get_secret_value(), decode_responses=True)
        show_hotset(rds, TENANTS)
        if args.keep_running:
            print("\nthe stack keeps running (Ctrl-C stops it):", flush=True)
            for k, v in sorted(stack.env.items()):
                print(f"  {k}={v}")
            while all(p.poll() is None for p in stack.procs):
                time.sleep(0.5)
        return 0
    except KeyboardInterrupt:
        return 0
    except devstack.MissingDependency as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        stack.stop()


if __name__ == "__main__":
    raise SystemExit(main())

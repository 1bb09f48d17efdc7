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

from app import devstack
from app.cli import DevStack
from app.kafka import caught_up, publish_sync
from app.redis_client import create_sync_redis
from app.settings import Settings
from app.workload import conversation_events, scenario_events
from sinks.hotset import keys, layout

TENANTS = ["acme", "globex", "initech"]


def publish(settings: Settings, events: list[dict[str, Any]]) -> dict[int, int]:
    return publish_sync(settings, [(e["tenant_id"].encode(), orjson.dumps(e)) for e in events], settings.topic_events)


def wait_caught_up(settings: Settings, group: str, topic: str, ends: dict[int, int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not caught_up(settings, group, topic, ends):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{group} did not catch up on {topic} within {timeout_s}s")
        time.sleep(0.1)


def show_hotset(rds: Any, tenants: list[str]) -> None:  # a sync redis.Redis
    print("\n== Redis hotset ==")
    header = f"{'tenant':<10}{'memories':>10}{'writes':>8}{'dedupes':>9}{'supersed.':>10}{'redacted':>9}{'private':>8}"
    print(header)
    for t in tenants:
        s = {k: int(v) for k, v in rds.hgetall(keys.stats(t)).items()}
        redacted = sum(v for k, v in s.items() if k.startswith("redacted:"))
        print(
            f"{t:<10}{rds.zcard(keys.recent(t)):>10}{s.get('writes', 0):>8}{s.get('dedupes', 0):>9}"
            f"{s.get('superseded', 0):>10}{redacted:>9}{s.get('privacy_dropped', 0):>8}"
        )
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
        value = layout.decode(rds.get(keys.memory("acme", mid)))
        rec = orjson.loads(value.record_json) if value else {"content": {"text": "(expired)"}}
        print(f"active decision 'warehouse' for acme: {rec['content']['text']!r} ({mid})")
    for mid in rds.zrevrange(keys.by_session("acme", "demo-session"), 0, -1):
        value = layout.decode(rds.get(keys.memory("acme", mid)))
        if value and "REDACTED" in value.record_json:
            print("a redacted memory:", orjson.loads(value.record_json)["content"]["text"])
            break


def show_warehouse(settings: Settings, rds: Any, tenants: list[str], timeout_s: float = 180) -> None:
    """Wait until the warehouse holds every memory the hotset holds, then compare them."""
    from app.snowflake_conn import connect

    hot: dict[str, int] = {}
    for t in tenants:
        for k, v in rds.hgetall(keys.stats(t)).items():
            if k.startswith("type:"):
                hot[k[5:]] = hot.get(k[5:], 0) + int(v)
    conn = connect(settings)
    try:
        cur = conn.cursor()
        marks = ",".join("%s" for _ in tenants)
        started = time.monotonic()
        while True:
            cur.execute(
                f"SELECT type, COUNT(*) FROM MEMORY_RECORDS WHERE tenant_id IN ({marks}) GROUP BY type",
                tenants,
            )
            warehouse = {str(t): int(n) for t, n in cur.fetchall()}
            if warehouse == hot or time.monotonic() - started > timeout_s:
                break
            time.sleep(0.5)
        print(f"\n== Snowflake warehouse ({settings.snowflake_database}.{settings.snowflake_schema}.MEMORY_RECORDS) ==")
        print(f"{'type':<10}{'hotset':>8}{'warehouse':>11}")
        for t in sorted(set(hot) | set(warehouse)):
            print(f"{t:<10}{hot.get(t, 0):>8}{warehouse.get(t, 0):>11}")
        print("the warehouse holds what the hotset holds" if warehouse == hot else "MISMATCH (see logs)")
        cur.execute(
            "SELECT id, type, key, content:text::string, superseded_by, version FROM MEMORY_RECORDS "
            "WHERE tenant_id = %s AND type = 'decision' ORDER BY version",
            ["acme"],
        )
        print("acme's decisions in the warehouse (oldest first):")
        for row in cur.fetchall():
            print(f"  {row[0]}  {row[3]!r}  superseded_by={row[4]}")
        if warehouse != hot:
            raise RuntimeError("the warehouse did not catch up with the hotset")
    finally:
        conn.close()


def show_gateway(base_url: str, header: str) -> None:
    import httpx

    h = {header: "acme"}
    print(f"\n== HTTP gateway ({base_url}) ==")
    with httpx.Client(base_url=base_url, headers=h, timeout=10) as client:
        ctx = client.get(
            "/api/v2/context", params={"session_id": "demo-session", "agent_id": "planner", "budget_tokens": 300}
        )
        ctx.raise_for_status()
        body = ctx.json()
        print(
            f"GET /api/v2/context -> {ctx.status_code}, {len(body.get('items', []))} items, "
            f"{body['used_tokens']} of 300 tokens ({body['token_counting']}):"
        )
        for item in body.get("items", [])[:8]:
            print(f"  [{item.get('section', item.get('type'))}] {item.get('text', '')[:70]!r}")
        found = client.get("/api/v2/memory/search", params={"q": "system of record", "limit": 3})
        found.raise_for_status()
        print(f"GET /api/v2/memory/search?q=system+of+record -> {found.status_code}:")
        res = found.json()
        for r in res["results"]:
            print(f"  {r['score']:.3f} {r['memory_id']} {r['record']['content']['text'][:60]!r}")
        print(f"  ({res['candidates_examined']} candidates examined, pool {res['candidate_pool']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=3000, help="chat messages to publish (default 3000)")
    parser.add_argument("--keep-running", action="store_true", help="leave the stack up; Ctrl-C stops it")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a fresh temporary folder")
    args = parser.parse_args(argv)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="memstream-demo-"))
    stack_args = argparse.Namespace(
        kafka_port=devstack.free_port(),
        redis_port=devstack.free_port(),
        snowflake_port=devstack.free_port(),
        gateway_port=devstack.free_port(),
        data_dir=data_dir,
    )
    try:
        devstack.require_local_stack()
        stack = DevStack(stack_args)
    except devstack.MissingDependency as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        print(f"starting the embedded stack (logs in {stack.log_dir})", flush=True)
        stack.start()
        settings = Settings(_env_file=None, **{k[10:].lower(): v for k, v in stack.env.items()})  # type: ignore[arg-type]
        events = list(conversation_events(TENANTS, args.events))
        for t in TENANTS:
            events += scenario_events(t)
        started = time.monotonic()
        ends = publish(settings, events)
        print(
            f"published {len(events)} events ({args.events} chat messages from chitchat-dataset "
            f"+ scripted decisions, tasks, secrets, duplicates, private and invalid events)",
            flush=True,
        )
        wait_caught_up(settings, settings.worker_group, settings.topic_events, ends, 180)
        print(f"the worker consumed all of them in {time.monotonic() - started:.1f}s")
        rds: Any = create_sync_redis(settings)
        show_hotset(rds, TENANTS)
        show_warehouse(settings, rds, TENANTS)
        show_gateway(f"http://{devstack.LOOPBACK}:{stack.env['MEMSTREAM_GATEWAY_PORT']}", settings.dev_tenant_header)
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

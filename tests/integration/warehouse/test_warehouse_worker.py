"""The warehouse agent in real worker processes: replay, SIGKILL, warehouse outage, poison records.

Tests that start their own workers use their own topics and consumer groups (so killing them
cannot disturb other tests); the outage test also runs its own warehouse emulator.
"""

from __future__ import annotations

import base64
import os
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis

from app import devstack, migrate
from app.kafka import committed_offsets, publish_sync
from app.models import derive_memory_id
from app.settings import Settings
from sinks.hotset import keys
from tests.support.kafka import publish
from tests.support.stack import Proc, Stack, isolated_topics, stored, wait_until
from tests.support.warehouse import TopicReader, audit_entry, count, dead_letters, event, query, record, snapshot

pytestmark = pytest.mark.slow


@pytest.fixture
def isolated(stack: Stack) -> tuple[dict[str, str], Settings]:
    return isolated_topics(stack, "w", MEMSTREAM_SINK_BATCH_WITHIN_S="0.3")


def publish_records(settings: Settings, values: list[bytes], keys_: list[bytes] | None = None) -> dict[int, int]:
    pairs = list(zip(keys_ or [b"k"] * len(values), values, strict=True))
    return publish_sync(settings, [(k, v) for k, v in pairs], settings.topic_records)


def metric(port: int, name: str, labels: str = "") -> float | None:
    """One sample from a worker's Prometheus endpoint (None while it is not up)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith(f"{name}{labels} ") or line.startswith(f"{name}{{{labels}}} "):
            return float(line.split()[-1])
    return 0.0


def test_the_whole_topic_replayed_leaves_both_tables_unchanged(
    isolated: tuple[dict[str, str], Settings], stack: Stack, tenant: str
) -> None:
    env, settings = isolated
    events = [event(tenant, f"e{i}", agent_id="a1") for i in range(40)]
    events += [
        event(
            tenant,
            "d-old",
            type="decision",
            key="db",
            content={"text": "postgres"},
            occurred_at="2026-03-01T00:00:00Z",
        ),
        event(
            tenant,
            "d-new",
            type="decision",
            key="db",
            content={"text": "snowflake"},
            occurred_at="2026-03-02T00:00:00Z",
        ),
        event(tenant, "t1", type="task", key="t", content={"text": "ship", "status": "open"}),
        event(
            tenant,
            "t2",
            type="task",
            key="t",
            content={"text": "ship", "status": "done"},
            occurred_at="2026-03-03T00:00:00Z",
        ),
    ]
    deleted = derive_memory_id(tenant, "e0")
    events.append(
        {
            "schema_version": 1,
            "event_id": "del",
            "op": "delete",
            "tenant_id": tenant,
            "memory_id": deleted,
            "occurred_at": "2026-03-04T00:00:00Z",
        }
    )
    audits = [audit_entry(tenant, f"{tenant}-log-{i}") for i in range(15)]
    first = Proc(["worker"], env, stack.tmp / "wh-replay-a.log").start()
    try:
        publish(settings, events)
        publish_sync(settings, [(tenant.encode(), orjson.dumps(a)) for a in audits], settings.topic_audit)
        wait_until(lambda: count(settings, [tenant]) == 44 and count(settings, [tenant], "AUDIT_LOGS") == 15, 90)
        # ... and the delete has landed (the record count does not change for it)
        wait_until(
            lambda: (
                query(settings, "SELECT deleted_at IS NOT NULL FROM MEMORY_RECORDS WHERE id = %s", (deleted,))
                == [(True,)]
            ),
            30,
        )
    finally:
        first.stop()
    before = snapshot(settings, [tenant])
    by_id = {r[1]: r for r in before["records"]}
    assert by_id[derive_memory_id(tenant, "d-old")][5] == derive_memory_id(tenant, "d-new")
    assert by_id[derive_memory_id(tenant, "t1")][5] == derive_memory_id(tenant, "t2")
    assert by_id[deleted][6] is True
    ends = {
        topic: committed_offsets(settings, settings.warehouse_group, topic)
        for topic in (settings.topic_records, settings.topic_audit)
    }
    assert sum(ends[settings.topic_records].values()) >= 45

    # A new worker with new groups reads every topic from the beginning: ingest and sink replay.
    suffix = uuid.uuid4().hex[:8]
    replay_env = {
        **env,
        "MEMSTREAM_WORKER_GROUP": f"ri-{suffix}",
        "MEMSTREAM_WAREHOUSE_GROUP": f"rw-{suffix}",
    }
    second = Proc(["worker"], replay_env, stack.tmp / "wh-replay-b.log").start()
    try:

        def replayed() -> bool:
            for topic, end in ends.items():
                done = committed_offsets(settings, replay_env["MEMSTREAM_WAREHOUSE_GROUP"], topic)
                if any(done.get(p, -1) < o for p, o in end.items() if o > 0):
                    return False
            return True

        wait_until(replayed, 90, interval_s=0.2)
    finally:
        second.stop()
    assert snapshot(settings, [tenant]) == before


def test_sigkill_mid_batch_then_restart_every_record_exactly_once(
    isolated: tuple[dict[str, str], Settings], stack: Stack, tenant: str
) -> None:
    env, settings = isolated
    env = {**env, "MEMSTREAM_SINK_BATCH_MAX_ROWS": "400"}
    n = 12000
    recs = [record(tenant, f"k{i}", offset=i) for i in range(n)]
    keys_ = [f"{r.tenant_id}/{r.memory_id}".encode() for r in recs]
    worker = Proc(["worker"], env, stack.tmp / "wh-kill.log").start()
    try:
        publish_records(settings, [r.to_json() for r in recs], keys_)
        wait_until(lambda: count(settings, [tenant]) >= 800, 90, interval_s=0.02)
        worker.kill()  # SIGKILL: no shutdown, no final commit, possibly inside a MERGE
        at_kill = count(settings, [tenant])
        assert at_kill < n, "the worker finished before it could be killed; raise n"
        worker = Proc(["worker"], env, stack.tmp / "wh-kill.log").start()
        wait_until(lambda: count(settings, [tenant]) >= n, 120, interval_s=0.2)
    finally:
        worker.stop()
    got = query(
        settings,
        "SELECT COUNT(*), COUNT(DISTINCT id), MIN(version::STRING), MAX(version::STRING) "
        "FROM MEMORY_RECORDS WHERE tenant_id = %s",
        (tenant,),
    )[0]
    assert got[0] == got[1] == n  # every record, once
    versions = sorted(r.version for r in recs)
    assert (got[2].zfill(32), got[3].zfill(32)) == (versions[0], versions[-1])


def test_warehouse_outage_loses_nothing_and_the_backlog_drains(
    isolated: tuple[dict[str, str], Settings], stack: Stack, rds: redis.Redis, tenant: str, tmp_path: Path
) -> None:
    env, settings = isolated
    port, metrics_port = devstack.free_port(), devstack.free_port()
    warehouse = devstack.warehouse_service(port, tmp_path / "warehouse", tmp_path).start(deadline_s=60)
    settings = settings.model_copy(update={"snowflake_port": port})
    migrate.run(settings)
    env = {**env, "MEMSTREAM_SNOWFLAKE_PORT": str(port), "MEMSTREAM_METRICS_PORT": str(metrics_port)}
    worker = Proc(["worker"], env, stack.tmp / "wh-outage.log").start()
    retries = 'memstream_dependency_retries_total{dependency="snowflake"}'
    try:
        publish(settings, [event(tenant, f"a{i}") for i in range(30)])
        wait_until(lambda: count(settings, [tenant]) == 30, 90)

        warehouse.stop()  # SIGTERM: the emulator checkpoints to its data dir and exits
        publish(settings, [event(tenant, f"b{i}") for i in range(30)])
        # The hotset keeps taking writes and serving them while the warehouse is down.
        wait_until(lambda: rds.zcard(keys.recent(tenant)) == 60, 60)
        assert stored(rds, tenant, derive_memory_id(tenant, "b29")).record_json  # type: ignore[union-attr]
        wait_until(lambda: (metric(metrics_port, retries) or 0) >= 2, 60, interval_s=0.2)
        assert metric(metrics_port, 'memstream_dependency_up{dependency="snowflake"}') == 0.0
        # Backing off, not spinning: few attempts for the time spent, and the process is alive.
        r0 = metric(metrics_port, retries) or 0
        cpu0, wall0 = _cpu_seconds(worker), time.monotonic()
        wait_until(lambda: (metric(metrics_port, retries) or 0) >= r0 + 2, 60, interval_s=0.2)
        assert (_cpu_seconds(worker) - cpu0) / (time.monotonic() - wall0) < 0.5
        assert worker.proc is not None and worker.proc.poll() is None

        warehouse = devstack.warehouse_service(port, tmp_path / "warehouse", tmp_path).start(deadline_s=60)
        wait_until(lambda: count(settings, [tenant]) == 60, 90, interval_s=0.2)
        wait_until(lambda: metric(metrics_port, 'memstream_dependency_up{dependency="snowflake"}') == 1.0, 30)
        assert worker.proc is not None and worker.proc.poll() is None
        ids = {r[0] for r in query(settings, "SELECT id FROM MEMORY_RECORDS WHERE tenant_id = %s", (tenant,))}
        assert ids == {derive_memory_id(tenant, f"{p}{i}") for p in "ab" for i in range(30)}
    finally:
        worker.stop()
        warehouse.stop()


def _cpu_seconds(proc: Proc) -> float:
    assert proc.proc is not None
    with open(f"/proc/{proc.proc.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_poison_record_is_dead_lettered_and_its_batch_commits(worker: Proc, settings: Settings, tenant: str) -> None:
    good = [record(tenant, f"p{i}", offset=i) for i in range(20)]
    garbage = b"{not a record " + uuid.uuid4().hex.encode()
    wrong_shape = orjson.dumps({"tenant_id": tenant, "memory_id": "m-x", "hello": "world"})
    # The event model bounds ttl_seconds; a record from another producer may not, and the
    # warehouse rejects this one (NUMBER(18, 0)).
    too_big = record(tenant, "big").model_copy(update={"ttl_seconds": 10**19}).to_json()
    values: list[Any] = [g.to_json() for g in good[:10]] + [garbage, wrong_shape, too_big]
    values += [g.to_json() for g in good[10:]]
    reader = TopicReader(settings, settings.topic_deadletter)
    try:
        publish_records(settings, values, [tenant.encode()] * len(values))
        wait_until(lambda: count(settings, [tenant]) == 20, 90)

        def ours(msgs: list[bytes]) -> list[Any]:
            found = [
                d for d in dead_letters(msgs) if base64.b64decode(d.original_b64) in (garbage, wrong_shape, too_big)
            ]
            return found if len(found) >= 3 else []

        letters = reader.until(ours, 60)
    finally:
        reader.close()
    by_original = {base64.b64decode(d.original_b64): d for d in letters}
    assert by_original[garbage].stage == "warehouse-parse" and "Invalid JSON" in by_original[garbage].reason
    assert by_original[wrong_shape].stage == "warehouse-parse" and by_original[wrong_shape].tenant_id == tenant
    assert by_original[too_big].stage == "warehouse-merge" and by_original[too_big].tenant_id == tenant
    for d in letters:
        assert d.source is not None and d.source.topic == settings.topic_records
    assert {r[0] for r in query(settings, "SELECT id FROM MEMORY_RECORDS WHERE tenant_id = %s", (tenant,))} == {
        g.memory_id for g in good
    }

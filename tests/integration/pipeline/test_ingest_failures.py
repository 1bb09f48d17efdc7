"""Crash and scale-out behaviour of the ingest worker, each test on its own topics and group."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import redis

from app import devstack
from app.settings import Settings
from sinks.hotset import keys
from tests.support.kafka import publish, wait_committed
from tests.support.stack import Proc, Stack, isolated_topics, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def isolated(stack: Stack) -> tuple[dict[str, str], Settings]:
    return isolated_topics(stack, "t")


def events(tenants: list[str], n: int, tag: str) -> list[dict[str, Any]]:
    return [
        {
            "schema_version": 1,
            "event_id": f"{tag}-{i}",
            "tenant_id": tenants[i % len(tenants)],
            "type": "event",
            "session_id": "s",
            "content": {"text": f"{tag} event number {i}"},
            "occurred_at": "2026-04-01T00:00:00Z",
        }
        for i in range(n)
    ]


def total_writes(rds: redis.Redis, tenants: list[str]) -> int:
    return sum(int(rds.hget(keys.stats(t), "writes") or 0) for t in tenants)


def memories(rds: redis.Redis, tenants: list[str]) -> int:
    return sum(rds.zcard(keys.recent(t)) for t in tenants)


def written_by(port: int) -> float:
    """Events this worker wrote, from its own Prometheus endpoint."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return -1.0
    for line in text.splitlines():
        if line.startswith('memstream_ingest_events_total{outcome="write"}'):
            return float(line.split()[-1])
    return 0.0


def test_sigkill_mid_stream_loses_nothing_and_applies_nothing_twice(
    isolated: tuple[dict[str, str], Settings], stack: Stack, rds: redis.Redis
) -> None:
    env, settings = isolated
    tenants = [f"k-{uuid.uuid4().hex[:8]}" for _ in range(4)]
    n = 6000
    w = Proc(["worker"], env, stack.tmp / "worker-kill.log").start()
    try:
        ends = publish(settings, events(tenants, n, "kill"))
        wait_until(lambda: total_writes(rds, tenants) >= 500, timeout_s=90)
        w.kill()  # SIGKILL: no shutdown hooks, no final commit
        done_before_restart = total_writes(rds, tenants)
        assert done_before_restart < n, "worker finished before it could be killed; raise n"
        w = Proc(["worker"], env, stack.tmp / "worker-kill.log").start()
        wait_until(lambda: total_writes(rds, tenants) >= n, timeout_s=120)
        wait_committed(settings, settings.worker_group, ends, timeout_s=60)
    finally:
        w.stop()
    assert total_writes(rds, tenants) == n  # each event applied exactly once
    assert memories(rds, tenants) == n  # and none lost


def test_two_workers_share_partitions_and_take_over(
    isolated: tuple[dict[str, str], Settings], stack: Stack, rds: redis.Redis
) -> None:
    env, settings = isolated
    tenants = [f"s-{uuid.uuid4().hex[:8]}" for _ in range(16)]
    p1, p2 = devstack.free_port(), devstack.free_port()
    w1 = Proc(["worker"], {**env, "MEMSTREAM_METRICS_PORT": str(p1)}, stack.tmp / "worker-a.log").start()
    w2 = Proc(["worker"], {**env, "MEMSTREAM_METRICS_PORT": str(p2)}, stack.tmp / "worker-b.log").start()
    try:
        wait_until(lambda: written_by(p1) >= 0 and written_by(p2) >= 0, timeout_s=60)
        # Keep publishing until both workers have written: they share the partitions.
        rounds = 0
        while not (written_by(p1) > 0 and written_by(p2) > 0):
            assert rounds < 30, f"one worker never got partitions: {written_by(p1)}, {written_by(p2)}"
            publish(settings, events(tenants, 100, f"first{rounds}"))
            wait_until(lambda n=rounds: total_writes(rds, tenants) >= 100 * (n + 1), timeout_s=60)
            rounds += 1
        first = 100 * rounds

        w1.kill()
        publish(settings, events(tenants, 2000, "second"))
        wait_until(lambda: total_writes(rds, tenants) >= first + 2000, timeout_s=120)
        assert written_by(p2) > 0
    finally:
        w1.stop()
        w2.stop()
    assert memories(rds, tenants) == first + 2000
    assert total_writes(rds, tenants) == first + 2000
